package conn

// ReconnectRequests exposes the number of Reconnect calls to the external
// tests, which have no other way to know that one was registered.
func (c *Conn) ReconnectRequests() uint64 { return c.reconnectReqs.Load() }
