package natstest_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/relaygw/relay/embeddednats/natstest"
)

// fatalTB records Fatalf and ends the goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestEventually(t *testing.T) {
	tests := []struct {
		name     string
		trueFrom int // the call from which cond holds; 0: never
		wantMsg  string
	}{
		{name: "at once", trueFrom: 1},
		{name: "after some calls", trueFrom: 5},
		{name: "never", wantMsg: "the thing: not within 30ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fatalTB{TB: t}
			calls := 0
			done := make(chan struct{})
			go func() {
				defer close(done)
				natstest.Eventually(f, 30*time.Millisecond, "the thing", func() bool {
					calls++
					return tt.trueFrom > 0 && calls >= tt.trueFrom
				})
			}()
			<-done
			if f.msg != tt.wantMsg {
				t.Errorf("failure %q; want %q", f.msg, tt.wantMsg)
			}
			if tt.trueFrom > 0 && calls != tt.trueFrom {
				t.Errorf("cond called %d times; want %d", calls, tt.trueFrom)
			}
		})
	}
}
