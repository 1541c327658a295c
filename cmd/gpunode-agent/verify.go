package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/alecthomas/kingpin/v2"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/discovery"
	"github.com/gpunode/gpunode/rdma/probe"
	"github.com/gpunode/gpunode/verify"
)

// verifyFlags are the flags of `verify`.
type verifyFlags struct {
	cmd          *kingpin.CmdClause
	output       string
	verbose      bool
	expectedGPUs int
	expectedSet  bool
}

func addVerify(app *kingpin.Application) *verifyFlags {
	f := &verifyFlags{}
	f.cmd = app.Command("verify", "Discover once and check that the node will perform: GPU count, PCIe links, NVLink and NVSwitch fabric, ECC and row remaps, GPU-NIC affinity, RDMA modules, InfiniBand subnet manager, RoCE v2 mode, PFC/ECN, MTU, port rates and GPUDirect RDMA. Prints each failure and warning (every check with -v: pass, warn, fail or skip) with the observed and expected value, then one remedy per distinct cause. Exits 0 when no check fails (warnings allowed), 1 when one fails, 2 on bad usage or configuration.")
	f.cmd.Flag("output", "Output format: text or json.").Short('o').Default("text").EnumVar(&f.output, "text", "json")
	f.cmd.Flag("verbose", "List every check in the text output, passed and skipped ones too (by default: failures and warnings, and a line counting the rest).").Short('v').BoolVar(&f.verbose)
	intVar(f.cmd.Flag("expected-gpus", "GPUs the node must have (overrides verify.expectedGPUCount; 0 takes the count from the product).").PlaceHolder("N").IsSetByUser(&f.expectedSet), &f.expectedGPUs)
	return f
}

// VerifyOptions turns the verify configuration into check options.
func verifyOptions(c config.Verify) verify.Options {
	return verify.Options{ExpectedGPUCount: c.ExpectedGPUCount}
}

func runVerify(f *verifyFlags, env *discovery.Env, cfg config.Config, stdout, stderr io.Writer, logger *slog.Logger) int {
	if f.expectedSet {
		cfg.Verify.ExpectedGPUCount = f.expectedGPUs
		if err := cfg.Validate(); err != nil {
			fmt.Fprintf(stderr, "gpunode-agent: --expected-gpus: %v\n", err)
			return exitUsage
		}
	}
	if env.Simulated != "" {
		// A simulated node's tree is new for every command: what `tune
		// apply --simulate` did (kept in the state directory) is put into
		// it first, so verify sees the tuned node, as on a host.
		if _, err := env.CommandTuner(context.Background(), cfg.Tuning.StateDir); err != nil {
			fmt.Fprintf(stderr, "gpunode-agent: verify: %v\n", err)
			return exitFailure
		}
	}
	snap := discovery.New(env, cfg.Discovery.SourceTimeout).Discover(context.Background())
	opts := verifyOptions(cfg.Verify)
	// On a host (never a simulated node) the GPUs' memory is registered
	// on their nearest NICs for gpudirect-rdma-works; without RDMA only
	// the GPU side runs, which the check reports beside its skip.
	if env.Simulated == "" && cfg.Probe.GPUMemoryBytes > 0 && len(snap.GPUs) > 0 {
		opts.GPUMemoryRegistrations = probe.RegisterGPUs(verify.GPUPairs(snap), snap.RDMADevices, cfg.Probe.GPUMemoryBytes)
	}
	r := verify.Run(snap, opts)
	var err error
	if f.output == "json" {
		err = verify.JSON(stdout, r)
	} else {
		err = verify.Text(stdout, r, verify.TextOptions{All: f.verbose})
	}
	if err != nil {
		logger.Error("write report", "err", err)
		return exitFailure
	}
	if !r.Verified {
		return exitFailure
	}
	return 0
}
