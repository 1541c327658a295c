// Command install puts the test tools in the cache ahead of `go test`, so
// their one-time build or download does not count against test timeouts:
//
//	go run ./test/tools/install helm kube-apiserver etcd prometheus promtool node_exporter vm
package main

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/gpunode/gpunode/test/tools"
	"github.com/gpunode/gpunode/test/vm"
)

func main() {
	installers := map[string]func() (string, error){
		"helm":           tools.Helm,
		"kube-apiserver": tools.KubeAPIServer,
		"etcd":           tools.Etcd,
		"prometheus":     tools.Prometheus,
		"promtool":       tools.Promtool,
		"node_exporter":  tools.NodeExporter,
		// The Debian kernel and busybox of the VM tests (test/vm).
		"vm": func() (string, error) {
			k, err := vm.DebianKernel()
			if err != nil {
				return "", err
			}
			if _, err := vm.Busybox(); err != nil {
				return "", err
			}
			return k.Image, nil
		},
	}
	known := strings.Join(slices.Sorted(func(yield func(string) bool) {
		for k := range installers {
			if !yield(k) {
				return
			}
		}
	}), ", ")
	if len(os.Args) < 2 {
		fmt.Fprintf(os.Stderr, "usage: install TOOL... (known: %s)\n", known)
		os.Exit(2)
	}
	for _, name := range os.Args[1:] {
		install, ok := installers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "install: unknown tool %q (known: %s)\n", name, known)
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
