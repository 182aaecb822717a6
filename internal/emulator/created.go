package emulator

import "slices"

// Created returns the id of every token created through the API since New,
// in order, deleted since or not, when [Config.RecordCreates] is on (nil
// otherwise). A create whose answer was lost or held ([Emulator.LoseAnswers],
// [Emulator.SlowAnswers]) is in it: the token was made.
func (e *Emulator) Created() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.created == nil {
		return nil
	}
	return slices.Clone(*e.created)
}
