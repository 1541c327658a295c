package labels

import (
	"regexp"
	"strings"
)

// modelToken matches a GPU model within a product name: one or two capital
// letters, digits, optional capital suffix (H100, B200, GH200, A100, L40S,
// T4, A6000, MI300X, MI325X). Memory sizes (80GB) start with a digit and
// form factors (SXM4, HBM3, PCIe) have three letters or lower case, so
// they do not match.
var modelToken = regexp.MustCompile(`^[A-Z]{1,2}[0-9]{1,4}[A-Z]*$`)

// vendorWords are dropped from product names before looking for the model.
var vendorWords = map[string]bool{"NVIDIA": true, "Tesla": true, "AMD": true, "Instinct": true, "Radeon": true}

// Model returns the model of a GPU product name: "NVIDIA H100 80GB HBM3"
// -> "H100", "NVIDIA A100-SXM4-80GB" -> "A100", "AMD Instinct MI300X" ->
// "MI300X". Without a recognisable model token it returns the name without
// vendor words, joined with '-' ("NVIDIA RTX 6000 Ada Generation" ->
// "RTX-6000-Ada-Generation").
func Model(product string) string {
	words := strings.FieldsFunc(product, func(r rune) bool { return r == ' ' || r == '-' || r == '_' })
	var rest []string
	for _, w := range words {
		if vendorWords[w] {
			continue
		}
		if modelToken.MatchString(w) {
			return w
		}
		rest = append(rest, w)
	}
	return strings.Join(rest, "-")
}

// gfdDropped are the characters GFD removes from product names: anything
// but letters, digits, '-', '_', '.' and space.
var gfdDropped = regexp.MustCompile(`[^A-Za-z0-9\-_. ]`)

// GFDProduct formats a product name as GPU Feature Discovery does for
// nvidia.com/gpu.product (internal/lm/resource.go sanitise: drop other
// characters, then join the space-separated fields with '-'):
// "NVIDIA H100 80GB HBM3" -> "NVIDIA-H100-80GB-HBM3".
func GFDProduct(product string) string {
	return strings.Join(strings.Fields(gfdDropped.ReplaceAllString(product, "")), "-")
}

// GFDFamily is GPU Feature Discovery's nvidia.com/gpu.family for a compute
// capability (internal/lm/resource.go getArchFamily, k8s-device-plugin
// v0.17.2 and later, which added Blackwell).
func GFDFamily(major, minor int) string {
	switch major {
	case 1:
		return "tesla"
	case 2:
		return "fermi"
	case 3:
		return "kepler"
	case 5:
		return "maxwell"
	case 6:
		return "pascal"
	case 7:
		if minor < 5 {
			return "volta"
		}
		return "turing"
	case 8:
		if minor < 9 {
			return "ampere"
		}
		return "ada-lovelace"
	case 9:
		return "hopper"
	case 10, 12: // Blackwell has two compute capabilities
		return "blackwell"
	case 13:
		return "rubin"
	}
	return "undefined"
}

// AMDFamily maps an AMD architecture to the amdgpu family acronym AMD's
// node labeller writes (AMDGPU_FAMILY_* in the kernel's amdgpu_drm.h): the
// CDNA data-centre GPUs (MI100 gfx908, MI200 gfx90a, MI300 gfx942, MI350
// gfx950) are all GFX9, family AI. Others are left out rather than guessed.
func AMDFamily(arch string) string {
	switch strings.ToLower(arch) {
	case "cdna", "cdna1", "cdna2", "cdna3", "cdna4":
		return "AI"
	}
	return ""
}
