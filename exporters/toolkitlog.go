package exporters

import (
	"context"
	"log/slog"
)

// ToolkitLogger is the logger to hand exporter-toolkit: its start-up
// lines ("Listening on", "TLS is disabled.") repeat what the agent says
// in its own one line about the listener, so its Info records become
// Debug; warnings and errors (a web config that no longer parses) pass
// as they are.
func ToolkitLogger(l *slog.Logger) *slog.Logger {
	return slog.New(infoAsDebug{l.Handler()})
}

type infoAsDebug struct{ h slog.Handler }

func (d infoAsDebug) Enabled(ctx context.Context, level slog.Level) bool {
	if level == slog.LevelInfo {
		level = slog.LevelDebug
	}
	return d.h.Enabled(ctx, level)
}

func (d infoAsDebug) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelInfo {
		r.Level = slog.LevelDebug
	}
	return d.h.Handle(ctx, r)
}

func (d infoAsDebug) WithAttrs(as []slog.Attr) slog.Handler { return infoAsDebug{d.h.WithAttrs(as)} }
func (d infoAsDebug) WithGroup(name string) slog.Handler    { return infoAsDebug{d.h.WithGroup(name)} }
