package kubeapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// The content types of the two kinds of patch the agent sends.
const (
	applyPatch = "application/apply-patch+yaml" // JSON is YAML
	mergePatch = "application/merge-patch+json"
)

// listPage is how many objects a list asks for at a time.
const listPage = 500

// GetNode reads a Node.
func (c *Client) GetNode(ctx context.Context, name string) (*Node, error) {
	var n Node
	if err := c.do(ctx, request{method: http.MethodGet, path: nodePath(name)}, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// ListNodes reads every Node, a page at a time.
func (c *Client) ListNodes(ctx context.Context) ([]Node, error) {
	return list[Node](ctx, c, "/api/v1/nodes", url.Values{})
}

// ListPods reads the pods in namespace that match a label selector.
func (c *Client) ListPods(ctx context.Context, namespace, selector string) ([]Pod, error) {
	q := url.Values{}
	if selector != "" {
		q.Set("labelSelector", selector)
	}
	return list[Pod](ctx, c, "/api/v1/namespaces/"+url.PathEscape(namespace)+"/pods", q)
}

func list[T any](ctx context.Context, c *Client, path string, q url.Values) ([]T, error) {
	var out []T
	q.Set("limit", strconv.Itoa(listPage))
	for {
		var page struct {
			Metadata struct {
				Continue string `json:"continue"`
			} `json:"metadata"`
			Items []T `json:"items"`
		}
		if err := c.do(ctx, request{method: http.MethodGet, path: path, query: q}, &page); err != nil {
			return nil, err
		}
		out = append(out, page.Items...)
		if page.Metadata.Continue == "" {
			return out, nil
		}
		q.Set("continue", page.Metadata.Continue)
	}
}

// ApplyNode server-side applies cfg, an apply configuration of a Node
// (apiVersion, kind, metadata.name and the fields the manager wants to
// own), as fieldManager; force takes over fields others own.
func (c *Client) ApplyNode(ctx context.Context, name string, cfg any, fieldManager string, force bool) (*Node, error) {
	return c.apply(ctx, nodePath(name), cfg, fieldManager, force)
}

// ApplyNodeStatus is ApplyNode on the status subresource (conditions).
func (c *Client) ApplyNodeStatus(ctx context.Context, name string, cfg any, fieldManager string, force bool) (*Node, error) {
	return c.apply(ctx, nodePath(name)+"/status", cfg, fieldManager, force)
}

func (c *Client) apply(ctx context.Context, path string, cfg any, fieldManager string, force bool) (*Node, error) {
	body, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode apply configuration: %w", err)
	}
	q := url.Values{"fieldManager": {fieldManager}}
	if force {
		q.Set("force", "true")
	}
	var n Node
	if err := c.do(ctx, request{method: http.MethodPatch, path: path, query: q, contentType: applyPatch, body: body}, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// MergePatchNode sends a JSON merge patch (RFC 7386) of a Node.
func (c *Client) MergePatchNode(ctx context.Context, name string, patch []byte, fieldManager string) (*Node, error) {
	q := url.Values{"fieldManager": {fieldManager}}
	var n Node
	if err := c.do(ctx, request{method: http.MethodPatch, path: nodePath(name), query: q, contentType: mergePatch, body: patch}, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// CreateEvent creates an event in its namespace.
func (c *Client) CreateEvent(ctx context.Context, ev *Event) error {
	body, err := json.Marshal(struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		*Event
	}{"v1", "Event", ev})
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	return c.do(ctx, request{method: http.MethodPost, path: "/api/v1/namespaces/" + url.PathEscape(ev.Namespace) + "/events",
		contentType: "application/json", body: body}, nil)
}

func nodePath(name string) string { return "/api/v1/nodes/" + url.PathEscape(name) }
