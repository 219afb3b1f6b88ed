package callbacks

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// The Standard Webhooks example vector (also the reference libraries' test).
const (
	vectorSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorMsgID  = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTS     = 1614265330
	vectorBody   = `{"test": 2432232314}`
	vectorSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

// independentSig computes a v1 signature without any code of this package.
func independentSig(t *testing.T, secret, msgID string, ts int64, body string) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatalf("decode %q: %v", secret, err)
	}
	h := hmac.New(sha256.New, key)
	fmt.Fprintf(h, "%s.%d.%s", msgID, ts, body)
	return "v1," + base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func TestSign(t *testing.T) {
	second := "whsec_" + base64.StdEncoding.EncodeToString([]byte("another-secret-of-32-bytes-long!"))
	tests := []struct {
		name    string
		secrets []string
		msgID   string
		ts      time.Time
		body    string
		want    string // "" means: the independent HMAC of every secret
	}{
		{name: "spec vector", secrets: []string{vectorSecret}, msgID: vectorMsgID, ts: time.Unix(vectorTS, 0), body: vectorBody, want: vectorSig},
		{name: "sub-second timestamp truncates", secrets: []string{vectorSecret}, msgID: vectorMsgID, ts: time.Unix(vectorTS, 999_999_999), body: vectorBody, want: vectorSig},
		{name: "empty body", secrets: []string{vectorSecret}, msgID: "msg_1", ts: time.Unix(1700000000, 0), body: ""},
		{name: "dots in id and body", secrets: []string{second}, msgID: "job.1.2", ts: time.Unix(1700000001, 0), body: `{"a":"x.y"}`},
		{name: "two secrets sign in order", secrets: []string{vectorSecret, second}, msgID: vectorMsgID, ts: time.Unix(vectorTS, 0), body: vectorBody},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSigner(tt.secrets...)
			if err != nil {
				t.Fatalf("NewSigner: %v", err)
			}
			want := tt.want
			if want == "" {
				var parts []string
				for _, sec := range tt.secrets {
					parts = append(parts, independentSig(t, sec, tt.msgID, tt.ts.Unix(), tt.body))
				}
				want = strings.Join(parts, " ")
			}
			if got := s.Sign(tt.msgID, tt.ts, []byte(tt.body)); got != want {
				t.Errorf("Sign(%q, %d, %q) = %q; want %q", tt.msgID, tt.ts.Unix(), tt.body, got, want)
			}
			if got := independentSig(t, tt.secrets[0], tt.msgID, tt.ts.Unix(), tt.body); tt.want != "" && got != tt.want {
				t.Errorf("independent HMAC = %q; want %q", got, tt.want)
			}
		})
	}
}

// TestSignReferenceVerifier checks our signatures with the reference
// Standard Webhooks Go library (reliability.md W1), each secret alone.
func TestSignReferenceVerifier(t *testing.T) {
	second := "whsec_" + base64.StdEncoding.EncodeToString([]byte("rotated-secret-0123456789abcdef!"))
	s, err := NewSigner(vectorSecret, second)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	now := time.Now()
	body := []byte(`{"id":"job_1","status":"succeeded"}`)
	h := http.Header{}
	h.Set("webhook-id", "job_1")
	h.Set("webhook-timestamp", fmt.Sprint(now.Unix()))
	h.Set("webhook-signature", s.Sign("job_1", now, body))
	for _, tt := range []struct {
		name    string
		secret  string
		body    []byte
		wantErr bool
	}{
		{name: "first secret", secret: vectorSecret, body: body},
		{name: "second secret", secret: second, body: body},
		{name: "tampered body", secret: vectorSecret, body: append(bytes.Clone(body), ' '), wantErr: true},
		{name: "unrelated secret", secret: "whsec_" + base64.StdEncoding.EncodeToString([]byte("nope")), body: body, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wh, err := standardwebhooks.NewWebhook(tt.secret)
			if err != nil {
				t.Fatalf("NewWebhook: %v", err)
			}
			if err := wh.Verify(tt.body, h); (err != nil) != tt.wantErr {
				t.Errorf("reference Verify = %v; wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func TestNewSignerErrors(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
	}{
		{name: "none"},
		{name: "no prefix", secrets: []string{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}},
		{name: "not base64", secrets: []string{"whsec_not*base64!"}},
		{name: "empty key", secrets: []string{"whsec_"}},
		{name: "second bad", secrets: []string{vectorSecret, "whsec_%%%%"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSigner(tt.secrets...)
			if !errors.Is(err, ErrInvalidSecret) {
				t.Fatalf("NewSigner(%q) = %v, %v; want ErrInvalidSecret", tt.secrets, s, err)
			}
			for _, sec := range tt.secrets {
				if body := strings.TrimPrefix(sec, "whsec_"); len(body) > 3 && strings.Contains(err.Error(), body) {
					t.Errorf("NewSigner error %q shows the secret", err)
				}
			}
		})
	}
}

func TestSignerRedacted(t *testing.T) {
	raw := "super-secret-key-material-000000"
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte(raw))
	s, err := NewSigner(secret)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("signer", "s", s)
	keyBytes := fmt.Sprint([]byte(raw)[:8]) // how %v would print the key
	keyBytes = keyBytes[1 : len(keyBytes)-1]
	for _, tt := range []struct {
		name, got string
	}{
		{"%v pointer", fmt.Sprintf("%v", s)},
		{"%+v value", fmt.Sprintf("%+v", *s)},
		{"%#v pointer", fmt.Sprintf("%#v", s)},
		{"%q", fmt.Sprintf("%q", s)},
		{"slog", logged.String()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, leak := range []string{raw, strings.TrimPrefix(secret, "whsec_"), keyBytes} {
				if strings.Contains(tt.got, leak) {
					t.Errorf("formatted Signer %q contains key material %q", tt.got, leak)
				}
			}
		})
	}
}

func TestVerify(t *testing.T) {
	old := vectorSecret
	next := "whsec_" + base64.StdEncoding.EncodeToString([]byte("the-new-secret-after-rotation-32"))
	other := "whsec_" + base64.StdEncoding.EncodeToString([]byte("a-secret-the-sender-never-used!!"))
	ts := time.Unix(vectorTS, 0)
	both, err := NewSigner(old, next)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	rotated := both.Sign(vectorMsgID, ts, []byte(vectorBody))

	tests := []struct {
		name      string
		secret    string
		msgID     string
		timestamp string
		header    string
		body      string
		now       time.Time
		tolerance time.Duration
		want      error
	}{
		{name: "spec vector", secret: old, header: vectorSig, now: ts},
		{name: "tampered body", secret: old, header: vectorSig, body: `{"test": 2432232315}`, now: ts, want: ErrNoMatchingSignature},
		{name: "tampered id", secret: old, msgID: "msg_other", header: vectorSig, now: ts, want: ErrNoMatchingSignature},
		{name: "tampered timestamp", secret: old, timestamp: "1614265331", header: vectorSig, now: ts, want: ErrNoMatchingSignature},
		{name: "wrong secret", secret: other, header: vectorSig, now: ts, want: ErrNoMatchingSignature},
		{name: "rotated: old secret", secret: old, header: rotated, now: ts},
		{name: "rotated: new secret", secret: next, header: rotated, now: ts},
		{name: "rotated: unrelated secret", secret: other, header: rotated, now: ts, want: ErrNoMatchingSignature},
		{name: "match among unknown versions", secret: old, header: "v2,abc v1,bm9wZQ== garbage " + vectorSig, now: ts},
		{name: "only other versions", secret: old, header: "v1a," + vectorSig[3:] + " v2," + vectorSig[3:], now: ts, want: ErrNoMatchingSignature},
		{name: "stale timestamp", secret: old, header: vectorSig, now: ts.Add(DefaultTolerance + time.Second), want: ErrTimestampOutOfRange},
		{name: "future timestamp", secret: old, header: vectorSig, now: ts.Add(-DefaultTolerance - time.Second), want: ErrTimestampOutOfRange},
		{name: "at tolerance edge", secret: old, header: vectorSig, now: ts.Add(DefaultTolerance)},
		{name: "custom tolerance", secret: old, header: vectorSig, now: ts.Add(2 * time.Second), tolerance: time.Second, want: ErrTimestampOutOfRange},
		{name: "non-numeric timestamp", secret: old, timestamp: "yesterday", header: vectorSig, now: ts, want: ErrInvalidHeaders},
		{name: "missing signature", secret: old, header: "", now: ts, want: ErrInvalidHeaders},
		{name: "missing id", secret: old, msgID: "-", header: vectorSig, now: ts, want: ErrInvalidHeaders},
		{name: "bad secret", secret: "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", header: vectorSig, now: ts, want: ErrInvalidSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgID, timestamp, body := vectorMsgID, fmt.Sprint(vectorTS), vectorBody
			switch tt.msgID {
			case "":
			case "-":
				msgID = ""
			default:
				msgID = tt.msgID
			}
			if tt.timestamp != "" {
				timestamp = tt.timestamp
			}
			if tt.body != "" {
				body = tt.body
			}
			err := Verify(tt.secret, msgID, timestamp, tt.header, []byte(body), tt.now, tt.tolerance)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Verify(%q, %q, %q) = %v; want %v", msgID, timestamp, tt.header, err, tt.want)
			}
		})
	}
}
