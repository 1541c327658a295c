package exporters

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gpunode/gpunode/verify"
)

func TestVerifyCollector(t *testing.T) {
	var r *verify.Report
	c := NewVerifyCollector(func() *verify.Report { return r })
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Fatalf("before the first verification: %d series", n)
	}
	r = &verify.Report{Results: []verify.Result{
		{Check: "gpu-pcie-link", Subject: "gpu0", Status: verify.Pass, Severity: verify.Critical},
		{Check: "gpu-pcie-link", Subject: "gpu2", Status: verify.Fail, Severity: verify.Critical},
		{Check: "rdma-mtu", Subject: "mlx5_8/1", Status: verify.Warn, Severity: verify.Warning},
		{Check: "roce-mode", Subject: "node", Status: verify.Skip, Severity: verify.Critical},
	}}
	want := `
# HELP gpunode_check_status Node verification, per check and subject: 1 pass, 0 finding (severity critical: the check failed; severity warning: a warning). Skipped checks (not applicable, or facts unknown) are left out.
# TYPE gpunode_check_status gauge
gpunode_check_status{check="gpu-pcie-link",severity="critical",subject="gpu0"} 1
gpunode_check_status{check="gpu-pcie-link",severity="critical",subject="gpu2"} 0
gpunode_check_status{check="rdma-mtu",severity="warning",subject="mlx5_8/1"} 0
# HELP gpunode_node_verified 1 when node verification found no failed check (the gpunode.dev/verified label and the GPUNodeVerified condition), 0 otherwise.
# TYPE gpunode_node_verified gauge
gpunode_node_verified 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}
