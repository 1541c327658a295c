package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/alecthomas/kingpin/v2"
)

// intVar and durationVar are kingpin's IntVar and DurationVar with the
// flag's name in the error: kingpin's own say only
// `strconv.ParseFloat: parsing "abc": invalid syntax`.
func intVar(fc *kingpin.FlagClause, v *int) {
	fc.SetValue(&intValue{flag: fc.Model().Name, v: v})
}

func durationVar(fc *kingpin.FlagClause, v *time.Duration) {
	fc.SetValue(&durationValue{flag: fc.Model().Name, v: v})
}

type intValue struct {
	flag string
	v    *int
}

func (i *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("--%s: want a whole number, got %q", i.flag, s)
	}
	*i.v = n
	return nil
}

func (i *intValue) String() string { return strconv.Itoa(*i.v) }

type durationValue struct {
	flag string
	v    *time.Duration
}

func (d *durationValue) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("--%s: want a duration such as 30s, 5m or 1h, got %q", d.flag, s)
	}
	*d.v = v
	return nil
}

func (d *durationValue) String() string { return d.v.String() }
