package demo

import (
	"errors"
	"slices"
	"strings"
)

// jobLog is what the runner makes of a step's stdout: the lines a user sees
// in the job log, and the values the step masked. The demo shows the
// action's output this way, so that it prints exactly what GitHub would
// print, and checks that the token never shows.
type jobLog struct {
	// Lines are the displayed lines: workflow commands are consumed
	// (::add-mask::, ::debug:: and unknown ones vanish; ::error::,
	// ::warning:: and ::notice:: become "Error: ..." and so on), and every
	// value masked so far is replaced by "***".
	Lines []string
	// Masks are the values registered with ::add-mask::, in order.
	Masks []string
}

// readJobLog applies the runner's rules for workflow commands to stdout, a
// line at a time: a mask hides its value in the lines after it, never in
// those before, which is why the action must mask before it prints.
func readJobLog(stdout string) jobLog {
	var l jobLog
	if stdout == "" {
		return l
	}
	for _, line := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		name, msg, isCmd := workflowCommand(line)
		if !isCmd {
			l.show(line)
			continue
		}
		switch name {
		case "add-mask":
			if msg != "" {
				l.Masks = append(l.Masks, msg)
			}
		case "error":
			l.show("Error: " + msg)
		case "warning":
			l.show("Warning: " + msg)
		case "notice":
			l.show("Notice: " + msg)
		}
	}
	return l
}

// show appends text, one displayed line per "\n", each with the masks
// applied.
func (l *jobLog) show(text string) {
	for _, line := range strings.Split(text, "\n") {
		for _, m := range l.Masks {
			line = strings.ReplaceAll(line, m, "***")
		}
		l.Lines = append(l.Lines, line)
	}
}

// workflowCommand parses "::name prop=v,...::message". isCmd is false for
// a plain line, which the runner prints as it is.
func workflowCommand(line string) (name, msg string, isCmd bool) {
	rest, ok := strings.CutPrefix(line, "::")
	if !ok {
		return "", "", false
	}
	head, msg, ok := strings.Cut(rest, "::")
	if !ok {
		return "", "", false
	}
	name, _, _ = strings.Cut(head, " ")
	if name == "" {
		return "", "", false
	}
	return name, unescapeData(msg), true
}

// unescapeData undoes the escaping of a command's message (the runner's
// ActionCommand.UnescapeData).
func unescapeData(s string) string {
	return strings.NewReplacer("%0D", "\r", "%0A", "\n", "%25", "%").Replace(s)
}

// errShown is the failure of [checkMasked].
var errShown = errors.New("the token value would show in the job log")

// checkMasked reports whether the step masked value and no displayed line
// shows it: [readJobLog] masks a value only from its ::add-mask:: on, so a
// line that printed the value earlier still shows it.
func checkMasked(l jobLog, value string) error {
	if !slices.Contains(l.Masks, value) {
		return errors.New("the action did not send ::add-mask:: for the token")
	}
	for _, line := range l.Lines {
		if strings.Contains(line, value) {
			return errShown
		}
	}
	return nil
}
