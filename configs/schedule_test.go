package configs

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestCallbackSchedule checks callbacks.retry_schedule, its default, the
// deprecated max_attempts' mapping onto it, and the problems reported.
func TestCallbackSchedule(t *testing.T) {
	def := []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour}
	cases := []struct {
		name    string
		yaml    string
		want    []time.Duration
		wantErr []string
	}{
		{name: "default", yaml: "", want: def},
		{name: "default cut to a short result_ttl", yaml: "jobs: {result_ttl: 1h}", want: def[:3]},
		{name: "own schedule", yaml: "callbacks: {retry_schedule: [1s, 1m]}", want: []time.Duration{time.Second, time.Minute}},
		{name: "empty: one attempt", yaml: "callbacks: {retry_schedule: []}", want: []time.Duration{}},
		{name: "max_attempts cuts", yaml: "callbacks: {max_attempts: 5}", want: def[:4]},
		{name: "max_attempts 1", yaml: "callbacks: {max_attempts: 1}", want: []time.Duration{}},
		{name: "max_attempts repeats the last delay", yaml: "callbacks: {max_attempts: 9}",
			want: append(append([]time.Duration{}, def...), 10*time.Hour, 10*time.Hour)},
		{name: "max_attempts 0", yaml: "callbacks: {max_attempts: 0}", wantErr: []string{"callbacks.max_attempts: must be >= 1"}},
		{name: "max_attempts without schedule", yaml: "callbacks: {max_attempts: 3, retry_schedule: []}",
			wantErr: []string{"callbacks.max_attempts: needs a non-empty callbacks.retry_schedule"}},
		{name: "bad delays", yaml: "callbacks: {retry_schedule: [0s, 1h, -1s]}",
			wantErr: []string{"callbacks.retry_schedule[0]: must be > 0", "callbacks.retry_schedule[2]: must be > 0"}},
		{name: "not a duration", yaml: "callbacks: {retry_schedule: [5s, soon]}",
			wantErr: []string{"callbacks.retry_schedule[1]"}},
		{name: "longer than result_ttl", yaml: "callbacks: {retry_schedule: [1s, 2h]}\njobs: {result_ttl: 1h}",
			wantErr: []string{"callbacks.retry_schedule[1]: 2h0m0s must be shorter than jobs.result_ttl (1h0m0s)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseWithEnv([]byte(minimalYAML+tc.yaml+"\n"), nil)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("ParseWithEnv = nil; want %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not hold %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Callbacks.Schedule(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Schedule() = %v; want %v", got, tc.want)
			}
		})
	}
}
