package labels_test

import "flag"

// updating reports the -update flag, which the internal test package registers.
func updating() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}
