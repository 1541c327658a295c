// Command install puts the test tools in the cache ahead of `go test`, so
// their one-time build or download does not count against test timeouts:
//
//	go run ./test/tools/install helm vm
package main

import (
	"fmt"
	"os"

	"github.com/gpunode/gpunode/test/tools"
	"github.com/gpunode/gpunode/test/vm"
)

func main() {
	installers := map[string]func() (string, error){
		"helm": tools.Helm,
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
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: install helm|vm ...")
		os.Exit(2)
	}
	for _, name := range os.Args[1:] {
		install, ok := installers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "install: unknown tool %q (known: helm, vm)\n", name)
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
