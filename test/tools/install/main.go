// Command install puts the test tools in the cache ahead of `go test`, so
// their one-time build does not count against test timeouts:
//
//	go run ./test/tools/install helm prometheus promtool node_exporter
package main

import (
	"fmt"
	"os"

	"github.com/gpunode/gpunode/test/tools"
)

func main() {
	installers := map[string]func() (string, error){"helm": tools.Helm, "prometheus": tools.Prometheus,
		"promtool": tools.Promtool, "node_exporter": tools.NodeExporter}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: install helm|prometheus|promtool|node_exporter ...")
		os.Exit(2)
	}
	for _, name := range os.Args[1:] {
		install, ok := installers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "install: unknown tool %q (known: helm, prometheus, promtool, node_exporter)\n", name)
			os.Exit(2)
		}
		path, err := install()
		if err != nil {
			fmt.Fprintf(os.Stderr, "install %s: %v\n", name, err)
			os.Exit(1)
		}
		fmt.Println(path)
	}
}
