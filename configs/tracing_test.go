package configs

import (
	"strings"
	"testing"
)

func TestTracingConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string // appended to minimalYAML
		want    Tracing
		wantErr string
	}{
		{name: "default off", want: Tracing{SampleRatio: 1}},
		{name: "on", yaml: "tracing: {otlp_endpoint: \"http://127.0.0.1:4318/v1/traces\", sample_ratio: 0.25}\n",
			want: Tracing{OTLPEndpoint: "http://127.0.0.1:4318/v1/traces", SampleRatio: 0.25}},
		{name: "ratio zero kept", yaml: "tracing: {sample_ratio: 0}\n", want: Tracing{}},
		{name: "ratio over one", yaml: "tracing:\n  sample_ratio: 1.5\n", wantErr: "tracing.sample_ratio: must be between 0 and 1 (line"},
		{name: "ratio negative", yaml: "tracing:\n  sample_ratio: -0.1\n", wantErr: "tracing.sample_ratio: must be between 0 and 1"},
		{name: "not a URL", yaml: "tracing:\n  otlp_endpoint: 127.0.0.1:4318\n", wantErr: "tracing.otlp_endpoint: must be an http(s) URL"},
		{name: "grpc scheme", yaml: "tracing:\n  otlp_endpoint: grpc://collector:4317\n", wantErr: "tracing.otlp_endpoint: must be an http(s) URL"},
		{name: "credentials", yaml: "tracing:\n  otlp_endpoint: http://u:p@collector:4318\n", wantErr: "tracing.otlp_endpoint: must be an http(s) URL"},
		{name: "unknown field", yaml: "tracing:\n  endpoint: http://x\n", wantErr: "tracing.endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(minimalYAML + tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse error = %v; want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Tracing != tt.want {
				t.Errorf("tracing = %+v; want %+v", c.Tracing, tt.want)
			}
		})
	}
}
