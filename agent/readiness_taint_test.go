package agent

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/internal/testsupport"
	"github.com/gpunode/gpunode/tuning"
)

// On a real kube-apiserver: a Node registered with the readiness taint
// (as kubelet --register-with-taints puts it) loses it once the agent has
// applied and verified its profile, and keeps it, with a TuningTaintKept
// event naming the failing setting, when the apply fails. Other taints
// are never touched.
func TestReadinessTaint(t *testing.T) {
	c := testCluster(t)
	ctx := context.Background()
	readiness := corev1.Taint{Key: "gpunode.dev/tuning", Value: "pending", Effect: corev1.TaintEffectNoSchedule}
	foreign := corev1.Taint{Key: "example.com/dedicated", Value: "inference", Effect: corev1.TaintEffectNoSchedule}
	for _, tc := range []struct {
		name, sim string
		broken    bool
	}{
		{"applied", "dgx-h100-ib", false},
		{"failed", "cpu-only", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := "readiness-" + tc.name
			if _, err := c.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{"kubernetes.io/hostname": node}},
				Spec:       corev1.NodeSpec{Taints: []corev1.Taint{readiness, foreign}},
			}, metav1.CreateOptions{FieldManager: "kubelet"}); err != nil {
				t.Fatal(err)
			}
			env := testsupport.SimEnv(t, tc.sim)
			if tc.broken { // takes writes, keeps nothing: the apply fails
				path := env.FS.Path("/proc/sys/vm/swappiness")
				os.Remove(path)
				if err := os.Symlink("/dev/null", path); err != nil {
					t.Fatal(err)
				}
			}
			cfg := config.Default()
			cfg.NodeName = node
			cfg.Publish.AllowSimulated = true
			cfg.Tuning.Mode, cfg.Tuning.Interval = tuning.ModeEnforce, 100*time.Millisecond
			cfg.Tuning.ReadinessTaint.Enabled = true
			logs := &syncBuffer{}
			runAgent(t, env, cfg, agentClient(t, c), logs)

			taints := func() []corev1.Taint {
				n, err := c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				return n.Spec.Taints
			}
			has := func(ts []corev1.Taint, want corev1.Taint) bool {
				return slices.ContainsFunc(ts, func(t corev1.Taint) bool { return t.MatchTaint(&want) && t.Value == want.Value })
			}
			if !tc.broken {
				waitFor(t, "readiness taint lifted", func() bool { return !has(taints(), readiness) })
				if ts := taints(); !has(ts, foreign) {
					t.Errorf("taints after the lift: %+v", ts)
				}
				return
			}
			var kept string
			waitFor(t, "TuningTaintKept event", func() bool {
				evs, err := c.Admin.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range evs.Items {
					if e.InvolvedObject.Name == node && e.Reason == "TuningTaintKept" {
						kept = e.Message
						return true
					}
				}
				return false
			})
			if !strings.Contains(kept, "taint gpunode.dev/tuning stays on the Node: tuning state error") || !strings.Contains(kept, "vm.swappiness") {
				t.Errorf("event message %q", kept)
			}
			time.Sleep(500 * time.Millisecond) // several intervals: still there
			if ts := taints(); !has(ts, readiness) || !has(ts, foreign) {
				t.Errorf("taints after a failed apply: %+v", ts)
			}
		})
	}
}
