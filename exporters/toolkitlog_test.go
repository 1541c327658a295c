package exporters

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// exporter-toolkit's Info lines drop to Debug; its errors stay errors.
func TestToolkitLogger(t *testing.T) {
	var b bytes.Buffer
	l := ToolkitLogger(slog.New(slog.NewTextHandler(&b, nil)).With("component", "metrics"))
	l.Info("Listening on", "address", ":9835")
	l.Info("TLS is disabled.", "http2", false)
	l.Error("Unable to parse configuration", "err", "boom")
	out := b.String()
	if strings.Contains(out, "Listening on") || strings.Contains(out, "TLS is disabled") {
		t.Errorf("toolkit start-up lines at info level:\n%s", out)
	}
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "component=metrics") {
		t.Errorf("toolkit error lost:\n%s", out)
	}
	b.Reset()
	ToolkitLogger(slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug}))).Info("Listening on")
	if !strings.Contains(b.String(), "level=DEBUG") {
		t.Errorf("toolkit info not at debug: %s", b.String())
	}
}
