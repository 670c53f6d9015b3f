package obs

// AppendJSONString appends s to b with the characters JSON requires escaped (without
// the surrounding quotes), for handlers that build their JSON by hand.
func AppendJSONString(b []byte, s string) []byte { return appendJSONString(b, s) }
