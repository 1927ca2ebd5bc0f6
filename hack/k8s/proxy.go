package main

// The fault-injecting proxy in front of the real API server: faults the server cannot be made
// to produce on demand. Everything else it passes through untouched (TLS is terminated with the
// API server's own certificate and the request forwarded with its own credentials).
//
// Control, on the proxy's address (JSON answers):
//
//	GET  /_fault/report            {"connections","conflicts","gone","watches"}
//	POST /_fault/conflict-every/N  answer every Nth write to a roster.io object 409 Conflict (0: off)
//	POST /_fault/pause-watches     hold new watch requests until resume
//	POST /_fault/resume-watches
//	POST /_fault/close-watches     end every open watch
//	POST /_fault/compact           compact etcd at its current revision

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

type proxy struct {
	mu           sync.Mutex
	connections  uint64
	conflicts    uint64
	gone         uint64
	writes       uint64
	conflictN    uint64
	watches      map[uint64]context.CancelFunc
	nextWatch    uint64
	paused       chan struct{} // closed when not paused
	etcdURL      string
	server       *http.Server
	reverseProxy *httputil.ReverseProxy
}

func startProxy(dir, upstream string, p *pki, etcdURL string) (*proxy, error) {
	target, err := url.Parse(upstream)
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(p.caCert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		return nil, err
	}
	px := &proxy{watches: map[uint64]context.CancelFunc{}, etcdURL: etcdURL}
	px.paused = make(chan struct{})
	close(px.paused)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		MaxIdleConns:      100,
		IdleConnTimeout:   90 * time.Second,
	}
	rp.FlushInterval = -1
	rp.ModifyResponse = px.watchGone
	rp.ErrorLog = nil
	px.reverseProxy = rp
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	px.server = &http.Server{
		Handler:   px,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				px.mu.Lock()
				px.connections++
				px.mu.Unlock()
			}
		},
	}
	go func() { _ = px.server.ServeTLS(l, "", "") }()
	addr := fmt.Sprintf("https://%s", l.Addr().String())
	if err := writeAtomic(filepath.Join(dir, "proxy-address"), []byte(addr), 0o644); err != nil {
		return nil, err
	}
	return px, nil
}

func (px *proxy) Close() { _ = px.server.Close() }

func (px *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_fault/") {
		px.control(w, r)
		return
	}
	q := r.URL.Query()
	if watch := q.Get("watch"); watch == "true" || watch == "1" {
		px.mu.Lock()
		paused := px.paused
		px.mu.Unlock()
		select {
		case <-paused:
		case <-r.Context().Done():
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		px.mu.Lock()
		id := px.nextWatch
		px.nextWatch++
		px.watches[id] = cancel
		px.mu.Unlock()
		defer func() {
			px.mu.Lock()
			delete(px.watches, id)
			px.mu.Unlock()
			cancel()
		}()
		r = r.WithContext(ctx)
	} else if isRosterWrite(r) {
		px.mu.Lock()
		px.writes++
		conflict := px.conflictN > 0 && px.writes%px.conflictN == 0
		if conflict {
			px.conflicts++
		}
		px.mu.Unlock()
		if conflict {
			// As if someone had written the object since the client read it.
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(map[string]any{
				"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
				"status": "Failure", "reason": "Conflict", "code": 409,
				"message": "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again (injected by roster-k8s proxy)",
			})
			return
		}
	}
	px.reverseProxy.ServeHTTP(w, r)
}

func isRosterWrite(r *http.Request) bool {
	switch r.Method {
	case http.MethodPut, http.MethodPatch, http.MethodPost:
		return strings.HasPrefix(r.URL.Path, "/apis/roster.io/")
	}
	return false
}

// watchGone counts 410 Gone answers to watches: a status of 410, or an ERROR event with code
// 410 in the stream (what the API server sends for a resourceVersion that is too old).
func (px *proxy) watchGone(resp *http.Response) error {
	q := resp.Request.URL.Query()
	if w := q.Get("watch"); w != "true" && w != "1" {
		return nil
	}
	if resp.StatusCode == http.StatusGone {
		px.mu.Lock()
		px.gone++
		px.mu.Unlock()
		return nil
	}
	resp.Body = &goneScanner{ReadCloser: resp.Body, px: px}
	return nil
}

type goneScanner struct {
	io.ReadCloser
	px   *proxy
	tail []byte
}

var goneMarker = []byte(`"code":410`)

func (g *goneScanner) Read(b []byte) (int, error) {
	n, err := g.ReadCloser.Read(b)
	if n > 0 {
		buf := append(g.tail, b[:n]...)
		if bytes.Contains(buf, goneMarker) && bytes.Contains(buf, []byte(`"ERROR"`)) {
			g.px.mu.Lock()
			g.px.gone++
			g.px.mu.Unlock()
			buf = nil
		}
		if len(buf) > 256 {
			buf = buf[len(buf)-256:]
		}
		g.tail = append([]byte(nil), buf...)
	}
	return n, err
}

func (px *proxy) control(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/_fault/"), "/")
	px.mu.Lock()
	defer px.mu.Unlock()
	switch {
	case parts[0] == "report":
	case parts[0] == "conflict-every" && len(parts) == 2 && r.Method == http.MethodPost:
		n, err := strconv.ParseUint(parts[1], 10, 32)
		if err != nil {
			http.Error(w, "conflict-every/N: N is a number", http.StatusBadRequest)
			return
		}
		px.conflictN = n
		px.writes = 0
	case parts[0] == "pause-watches" && r.Method == http.MethodPost:
		select {
		case <-px.paused:
			px.paused = make(chan struct{})
		default:
		}
	case parts[0] == "resume-watches" && r.Method == http.MethodPost:
		select {
		case <-px.paused:
		default:
			close(px.paused)
		}
	case parts[0] == "close-watches" && r.Method == http.MethodPost:
		for id, cancel := range px.watches {
			cancel()
			delete(px.watches, id)
		}
	case parts[0] == "compact" && r.Method == http.MethodPost:
		if err := compact(r.Context(), px.etcdURL); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	default:
		http.Error(w, "unknown fault control "+r.URL.Path, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]uint64{
		"connections": px.connections,
		"conflicts":   px.conflicts,
		"gone":        px.gone,
		"watches":     uint64(len(px.watches)),
	})
}

// compact compacts etcd's history up to its current revision (physically, so it is gone when
// this returns): a watch resuming from an older resourceVersion is answered 410 Gone.
func compact(ctx context.Context, endpoint string) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "/registry/roster-k8s-compact-probe")
	if err != nil {
		return err
	}
	_, err = cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical())
	return err
}
