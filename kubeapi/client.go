package kubeapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
)

// Client makes requests to one API server. It is safe for concurrent use.
type Client struct {
	rest *rest.RESTClient
}

// coreV1 is the legacy core group's version, under /api.
var coreV1 = schema.GroupVersion{Version: "v1"}

// New returns a client for cfg: one client-go transport (an HTTP/2
// connection) and rate limiter of its own.
func New(cfg *Config) (*Client, error) {
	rc := cfg.restConfig()
	rc.APIPath, rc.GroupVersion = "/api", &coreV1
	rc.ContentType = runtime.ContentTypeJSON
	// The objects are the package's own types, decoded from the raw
	// response; the scheme only has to know metav1.Status, which an error
	// response carries.
	scheme := runtime.NewScheme()
	metav1.AddToGroupVersion(scheme, coreV1)
	rc.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	c, err := rest.RESTClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", rc.Host, err)
	}
	return &Client{rest: c}, nil
}

// do sends r and decodes a successful response into out (unless nil). An
// error response is a *StatusError.
func (c *Client) do(ctx context.Context, r *rest.Request, out any) error {
	res := r.Do(ctx)
	if err := res.Error(); err != nil {
		return statusError(err)
	}
	if out == nil {
		return nil
	}
	body, _ := res.Raw()
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s: decode response: %w", r.URL().Path, err)
	}
	return nil
}

// StatusError is an error response: its HTTP code and the API's Status.
// It is an apierrors.APIStatus, so client-go's error helpers read it too.
type StatusError struct {
	Code    int
	Reason  string // "NotFound", "Conflict", "AlreadyExists", ...
	Message string
	Causes  []StatusCause
}

// StatusCause is one cause in a Status's details.
type StatusCause struct {
	Type    string // "FieldManagerConflict", "FieldValueInvalid", ...
	Message string
	Field   string
}

func (e *StatusError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("the server answered %d %s", e.Code, e.Reason)
}

// Status is e as a metav1.Status (apierrors.APIStatus).
func (e *StatusError) Status() metav1.Status {
	s := metav1.Status{Status: metav1.StatusFailure, Code: int32(e.Code), Reason: metav1.StatusReason(e.Reason), Message: e.Message}
	if len(e.Causes) > 0 {
		s.Details = &metav1.StatusDetails{}
		for _, c := range e.Causes {
			s.Details.Causes = append(s.Details.Causes, metav1.StatusCause{Type: metav1.CauseType(c.Type), Message: c.Message, Field: c.Field})
		}
	}
	return s
}

// statusError turns client-go's error for an error response (the
// server's Status, or one client-go made up from the code for a body that
// is not a Status, such as a proxy's) into a *StatusError; other errors
// (transport, context) pass through.
func statusError(err error) error {
	var api apierrors.APIStatus
	if !errors.As(err, &api) {
		return err
	}
	s := api.Status()
	e := &StatusError{Code: int(s.Code), Reason: string(s.Reason), Message: s.Message}
	if s.Details != nil {
		for _, c := range s.Details.Causes {
			e.Causes = append(e.Causes, StatusCause{Type: string(c.Type), Message: c.Message, Field: c.Field})
		}
	}
	return e
}

// IsNotFound says the object does not exist.
func IsNotFound(err error) bool { return apierrors.IsNotFound(err) }

// IsConflict says a precondition (resourceVersion, UID) or a server-side
// apply field ownership failed.
func IsConflict(err error) bool { return apierrors.IsConflict(err) }

// IsAlreadyExists says a created object's name is taken.
func IsAlreadyExists(err error) bool { return apierrors.IsAlreadyExists(err) }

// IsForbidden says RBAC or an admission policy refused the request.
func IsForbidden(err error) bool { return apierrors.IsForbidden(err) }

// IsInvalid says the object failed validation.
func IsInvalid(err error) bool { return apierrors.IsInvalid(err) }

// IsBadRequest says the request itself was malformed.
func IsBadRequest(err error) bool { return apierrors.IsBadRequest(err) }
