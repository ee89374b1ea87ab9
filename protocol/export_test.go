package protocol

// ValidJSON exposes the frame scanner's validation to the external tests.
var ValidJSON = validJSON
