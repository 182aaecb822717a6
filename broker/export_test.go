package broker

// Busy reports whether an operation, or a clean-up one started (deleting
// what it could not deliver, searching for the token of a create with an
// unknown outcome), is still running: what [Server.Drain] waits for, seen
// without starting a shutdown. A test that needs every clean-up's outcome
// waits until it is false.
func (s *Server) Busy() bool {
	s.track.mu.Lock()
	defer s.track.mu.Unlock()
	return s.track.n > 0
}
