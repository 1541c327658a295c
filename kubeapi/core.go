package kubeapi

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// listPage is how many objects a list asks for at a time.
const listPage = 500

// GetNode reads a Node.
func (c *Client) GetNode(ctx context.Context, name string) (*Node, error) {
	var n Node
	if err := c.do(ctx, c.rest.Get().Resource("nodes").Name(name), &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// ListNodes reads every Node, a page at a time.
func (c *Client) ListNodes(ctx context.Context) ([]Node, error) {
	return list[Node](ctx, c, func() *rest.Request { return c.rest.Get().Resource("nodes") })
}

// ListPods reads the pods in namespace that match a label selector.
func (c *Client) ListPods(ctx context.Context, namespace, selector string) ([]Pod, error) {
	return list[Pod](ctx, c, func() *rest.Request {
		r := c.rest.Get().Namespace(namespace).Resource("pods")
		if selector != "" {
			r.Param("labelSelector", selector)
		}
		return r
	})
}

// ListPodsOnNode reads the pods of every namespace that are bound to node
// (a field selector on spec.nodeName: the API server filters, so a node's
// agent reads its own node's pods only, though RBAC cannot restrict the
// permission to them).
func (c *Client) ListPodsOnNode(ctx context.Context, node string) ([]Pod, error) {
	return list[Pod](ctx, c, func() *rest.Request {
		return c.rest.Get().Resource("pods").Param("fieldSelector", "spec.nodeName="+node)
	})
}

// list sends the request newRequest makes for each page.
func list[T any](ctx context.Context, c *Client, newRequest func() *rest.Request) ([]T, error) {
	var out []T
	next := ""
	for {
		r := newRequest().Param("limit", strconv.Itoa(listPage))
		if next != "" {
			r.Param("continue", next)
		}
		var page struct {
			Metadata struct {
				Continue string `json:"continue"`
			} `json:"metadata"`
			Items []T `json:"items"`
		}
		if err := c.do(ctx, r, &page); err != nil {
			return nil, err
		}
		out = append(out, page.Items...)
		if page.Metadata.Continue == "" {
			return out, nil
		}
		next = page.Metadata.Continue
	}
}

// ApplyNode server-side applies cfg, an apply configuration of a Node
// (apiVersion, kind, metadata.name and the fields the manager wants to
// own), as fieldManager; force takes over fields others own.
func (c *Client) ApplyNode(ctx context.Context, name string, cfg any, fieldManager string, force bool) (*Node, error) {
	return c.apply(ctx, name, "", cfg, fieldManager, force)
}

// ApplyNodeStatus is ApplyNode on the status subresource (conditions).
func (c *Client) ApplyNodeStatus(ctx context.Context, name string, cfg any, fieldManager string, force bool) (*Node, error) {
	return c.apply(ctx, name, "status", cfg, fieldManager, force)
}

func (c *Client) apply(ctx context.Context, name, subresource string, cfg any, fieldManager string, force bool) (*Node, error) {
	body, err := json.Marshal(cfg) // JSON is YAML
	if err != nil {
		return nil, fmt.Errorf("encode apply configuration: %w", err)
	}
	r := c.rest.Patch(types.ApplyPatchType).Resource("nodes").Name(name).Param("fieldManager", fieldManager).Body(body)
	if subresource != "" {
		r.SubResource(subresource)
	}
	if force {
		r.Param("force", "true")
	}
	var n Node
	if err := c.do(ctx, r, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// MergePatchNode sends a JSON merge patch (RFC 7386) of a Node.
func (c *Client) MergePatchNode(ctx context.Context, name string, patch []byte, fieldManager string) (*Node, error) {
	r := c.rest.Patch(types.MergePatchType).Resource("nodes").Name(name).Param("fieldManager", fieldManager).Body(patch)
	var n Node
	if err := c.do(ctx, r, &n); err != nil {
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
	r := c.rest.Post().Namespace(ev.Namespace).Resource("events").SetHeader("Content-Type", "application/json").Body(body)
	return c.do(ctx, r, nil)
}
