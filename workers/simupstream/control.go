package simupstream

import (
	"encoding/json"
	"net/http"
	"time"
)

// controlPrefix starts the paths of the control endpoints.
const controlPrefix = "/_sim/"

// serveControl serves POST /_sim/fault?f=FAULT, POST /_sim/latency?d=DURATION
// and GET /_sim/stats. Control requests are not counted in Stats.
func (s *Server) serveControl(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case controlPrefix + "fault":
		if !allowMethod(w, r, http.MethodPost) {
			return
		}
		f := Fault(r.URL.Query().Get("f"))
		if !f.known() {
			writeControl(w, http.StatusBadRequest, map[string]string{"error": "unknown fault " + string(f)})
			return
		}
		s.SetFault(f)
		writeControl(w, http.StatusOK, map[string]string{"fault": string(f)})
	case controlPrefix + "latency":
		if !allowMethod(w, r, http.MethodPost) {
			return
		}
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil || d < 0 {
			writeControl(w, http.StatusBadRequest, map[string]string{"error": "invalid duration d"})
			return
		}
		s.SetLatency(d)
		writeControl(w, http.StatusOK, map[string]string{"latency": d.String()})
	case controlPrefix + "stats":
		if !allowMethod(w, r, http.MethodGet) {
			return
		}
		writeControl(w, http.StatusOK, s.Stats())
	default:
		writeControl(w, http.StatusNotFound, map[string]string{"error": "unknown control endpoint " + r.URL.Path})
	}
}

// allowMethod answers 405 and reports false unless r uses method.
func allowMethod(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeControl(w, http.StatusMethodNotAllowed, map[string]string{"error": "method " + r.Method + " not allowed"})
	return false
}

// writeControl answers a control request with v as JSON.
func writeControl(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
