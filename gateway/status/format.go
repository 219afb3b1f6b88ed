package status

import (
	"fmt"
	"html/template"
	"strings"
	"time"
)

// funcs format the report for the page.
var funcs = template.FuncMap{
	"secs":     fmtSecs,
	"secsp":    fmtSecsPtr,
	"until":    fmtUntil,
	"ago":      fmtAgo,
	"pct":      fmtPct,
	"bytes":    fmtBytes,
	"bucket":   fmtBucket,
	"join":     strings.Join,
	"clock":    func(t time.Time) string { return t.Format("15:04:05 UTC") },
	"targets":  fmtTargets,
	"isOpen":   func(b string) bool { return b != "closed" },
	"fullness": fullness,
	"anyShare": anyShare,
	"top":      topKeys,
	"more":     moreKeys,
	"tokens":   fmtTokens,
	"usd":      fmtUSD,
	"behind":   behindPeers,
	"peerClass": func(state string) string {
		switch state {
		case PeerOffline:
			return "bad"
		case PeerLagging:
			return "warnText"
		}
		return ""
	},
}

// pageKeys is how many keys the page lists (the busiest); /status.json
// has them all.
const pageKeys = 5

// topKeys returns the keys the page lists.
func topKeys(ks []KeySpend) []KeySpend { return ks[:min(len(ks), pageKeys)] }

// moreKeys counts the keys the page leaves out.
func moreKeys(ks []KeySpend) int { return max(len(ks)-pageKeys, 0) }

// fmtTokens formats the sum of token counts compactly: 950, 12.3k, 4.56M.
func fmtTokens(ns ...uint64) string {
	var n uint64
	for _, v := range ns {
		n += v
	}
	switch {
	case n < 10_000:
		return fmt.Sprint(n)
	case n < 1_000_000:
		return fmt.Sprintf("%.1fk", float64(n)/1e3)
	default:
		return fmt.Sprintf("%.2fM", float64(n)/1e6)
	}
}

// fmtUSD formats a spend: cents from a cent up, else four decimals (so a
// small spend is not shown as $0.00), and "<$0.0001" below that.
func fmtUSD(v float64) string {
	switch {
	case v >= 0.01 || v == 0:
		return fmt.Sprintf("$%.2f", v)
	case v < 0.00005:
		return "<$0.0001"
	}
	return fmt.Sprintf("$%.4f", v)
}

// fmtSecs formats seconds compactly: 0, 350ms, 1.2s, 2m05s, 3h10m.
func fmtSecs(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return "<1ms"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

func fmtSecsPtr(s *float64) string {
	if s == nil {
		return "–"
	}
	return fmtSecs(*s)
}

// fmtUntil formats a future time relative to now: "in 12.0s".
func fmtUntil(t *time.Time, now time.Time) string {
	if t == nil {
		return ""
	}
	return "in " + fmtSecs(t.Sub(now).Seconds())
}

// fmtAgo formats how long ago t was.
func fmtAgo(t, now time.Time) string { return fmtSecs(now.Sub(t).Seconds()) }

func fmtPct(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf("%.1f%%", *v*100)
}

// fmtBytes formats a byte count in binary units.
func fmtBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// fmtBucket formats a bucket as "available/limit", "–" when unlimited.
func fmtBucket(b Bucket) string {
	if b.PerMinute == 0 && b.Available == nil {
		return "–"
	}
	avail := "∞"
	if b.Available != nil {
		avail = fmt.Sprintf("%.0f", *b.Available)
	}
	limit := "–"
	if b.PerMinute > 0 {
		limit = fmt.Sprint(b.PerMinute)
	}
	s := avail + "/" + limit
	if b.CappedUntil != nil {
		s += " (capped)"
	}
	return s
}

// fmtTargets formats a route's targets: "sim:claude-sonnet-4-5 ×3".
func fmtTargets(ts []Target) string {
	parts := make([]string, 0, len(ts))
	for _, t := range ts {
		parts = append(parts, fmt.Sprintf("%s:%s ×%d", t.Provider, t.Model, t.Weight))
	}
	return strings.Join(parts, ", ")
}

// fullness classifies a lane's depth for highlighting: "", "warn" past
// half its max_depth or when the estimate reaches half its max_wait.
func fullness(l Lane) string {
	switch {
	case l.MaxDepth > 0 && l.Depth*2 >= l.MaxDepth, l.MaxWait > 0 && l.EstWait*2 >= l.MaxWait:
		return "warn"
	case l.Depth > 0:
		return "busy"
	}
	return ""
}

// anyShare reports whether any provider has a granted share (clustered).
func anyShare(ps []Provider) bool {
	for _, p := range ps {
		if p.GrantedShare != nil {
			return true
		}
	}
	return false
}

// behind sums up a stream's replicas that are not current, for its row.
type behind struct {
	Count   int
	Offline bool   // one of them is offline
	Detail  string // "n2 offline, n3 lag 7"
}

// behindPeers returns the stream's replicas that are not current, or nil
// when they all are.
func behindPeers(ps []Peer) *behind {
	var b behind
	var parts []string
	for _, p := range ps {
		switch {
		case p.Offline:
			b.Offline = true
			parts = append(parts, p.Name+" offline")
		case !p.Current:
			parts = append(parts, fmt.Sprintf("%s lag %d", p.Name, p.Lag))
		default:
			continue
		}
		b.Count++
	}
	if b.Count == 0 {
		return nil
	}
	b.Detail = strings.Join(parts, ", ")
	return &b
}
