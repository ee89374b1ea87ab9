//go:build goexperiment.jsonv2

package decoders

import jsonv2 "encoding/json/v2"

func init() {
	decoders = append(decoders, decoder{"json-v2", func(b []byte, v any) error { return jsonv2.Unmarshal(b, v) }})
}
