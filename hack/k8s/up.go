package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage/wal"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// The controllers a test cluster needs: garbage collection of dependents, namespace deletion,
// ServiceAccounts with their tokens and the root CA, and aggregated ClusterRoles.
const controllers = "garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,clusterrole-aggregation-controller"

// Every write is recorded (who, what, the answer); reads are not. Tests prove "nothing was
// written" from this log, not from the operator's own account.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: None
    verbs: [get, list, watch]
  - level: Metadata
`

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	dir := fs.String("dir", "", "state directory (certificates, etcd data, logs, kubeconfig)")
	crds := fs.String("crds", "", "directory of CustomResourceDefinition manifests to install before the controller manager starts")
	exitWithStdin := fs.Bool("exit-with-stdin", false, "stop when standard input closes (the test that started us is gone)")
	var extra stringList
	fs.Var(&extra, "apiserver-arg", "an extra kube-apiserver flag (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	*dir = abs
	kubeconfig := filepath.Join(*dir, "kubeconfig")
	_ = os.Remove(kubeconfig)
	p, err := ensurePKI(filepath.Join(*dir, "pki"))
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	if err := os.WriteFile(filepath.Join(*dir, "audit-policy.yaml"), []byte(auditPolicy), 0o644); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *exitWithStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop()
		}()
	}

	etcd, err := startEtcd(*dir)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()
	etcdURL := "http://" + etcd.Clients[0].Addr().String()
	if err := writeAtomic(filepath.Join(*dir, "etcd-url"), []byte(etcdURL), 0o644); err != nil {
		return err
	}

	var children []*exec.Cmd
	defer func() { stopAll(children) }()
	exited := make(chan string, 4)

	api, port, err := startAPIServer(*dir, p, etcdURL, extra, exited)
	if err != nil {
		return err
	}
	children = append(children, api)
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	cfg, err := restConfig(server, p.caCert, p.adminToken)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, cfg, exited); err != nil {
		return err
	}
	if *crds != "" {
		if err := installCRDs(ctx, cfg, *crds); err != nil {
			return fmt.Errorf("CRDs from %s: %w", *crds, err)
		}
	}
	kcmToken, err := os.ReadFile(filepath.Join(p.dir, "kcm.token"))
	if err != nil {
		return err
	}
	kcmConfig := filepath.Join(*dir, "controller-manager.kubeconfig")
	if err := writeKubeconfig(kcmConfig, server, p.caCert, string(kcmToken)); err != nil {
		return err
	}
	kcm, err := startChild(*dir, "kube-controller-manager", exited,
		"--kubeconfig="+kcmConfig,
		"--controllers="+controllers,
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--service-account-private-key-file="+p.saKey,
		"--root-ca-file="+p.caCert,
		"--concurrent-gc-syncs=5",
	)
	if err != nil {
		return err
	}
	children = append(children, kcm)
	// The controller manager is running once its ServiceAccount controller has made
	// `default` in the default namespace.
	if err := waitServiceAccount(ctx, cfg, exited); err != nil {
		return err
	}

	proxy, err := startProxy(*dir, server, p, etcdURL)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	defer proxy.Close()

	if err := writeKubeconfig(kubeconfig, server, p.caCert, p.adminToken); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "roster-k8s: ready at %s (kubeconfig %s)\n", server, kubeconfig)
	select {
	case <-ctx.Done():
		return nil
	case name := <-exited:
		return fmt.Errorf("%s exited; its log is in %s", name, filepath.Join(*dir, name+".log"))
	}
}

// startEtcd runs embedded etcd on free loopback ports; a port taken between choosing and
// binding it (another test's server got it first) is retried with others.
func startEtcd(dir string) (*embed.Etcd, error) {
	for attempt := 0; ; attempt++ {
		e, err := startEtcdOnce(dir)
		if err != nil && attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			continue
		}
		return e, err
	}
}

func startEtcdOnce(dir string) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "roster"
	cfg.Dir = filepath.Join(dir, "etcd")
	clientPort, err := freePort()
	if err != nil {
		return nil, err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, err
	}
	client, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", clientPort))
	peer, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", peerPort))
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	// A test cluster: losing the last writes in a power cut is fine, waiting for fsync is not.
	cfg.UnsafeNoFsync = true
	// WAL segments of 4 MB instead of 64 MB (etcd preallocates two): a test's control plane
	// then takes a few MB of disk, not 130.
	wal.SegmentSizeBytes = 4 * 1000 * 1000
	if _, err := os.Stat(filepath.Join(cfg.Dir, "member")); err == nil {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("not ready after 60 s")
	}
}

// startAPIServer runs kube-apiserver on a free loopback port; a port taken between choosing
// and binding it is retried with another.
func startAPIServer(dir string, p *pki, etcdURL string, extra []string, exited chan string) (*exec.Cmd, int, error) {
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, 0, err
		}
		args := []string{
			"--etcd-servers=" + etcdURL,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", port),
			"--tls-cert-file=" + p.serverCert,
			"--tls-private-key-file=" + p.serverKey,
			"--client-ca-file=" + p.caCert,
			"--token-auth-file=" + p.tokens,
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + p.saPublic,
			"--service-account-signing-key-file=" + p.saKey,
			"--service-cluster-ip-range=10.0.0.0/24",
			"--authorization-mode=RBAC",
			// Owner references with blockOwnerDeletion need update on the owner's finalizers:
			// the chart's RBAC is checked against it.
			"--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
			"--endpoint-reconciler-type=none",
			"--audit-policy-file=" + filepath.Join(dir, "audit-policy.yaml"),
			"--audit-log-path=" + filepath.Join(dir, "audit.log"),
			"--audit-log-mode=blocking",
			"--profiling=false",
			"--cert-dir=" + filepath.Join(dir, "pki"),
		}
		args = append(args, extra...)
		cmd, err := startChild(dir, "kube-apiserver", nil, args...)
		if err != nil {
			return nil, 0, err
		}
		// Listening (or gone) within the minute.
		deadline := time.Now().Add(60 * time.Second)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		for {
			select {
			case <-done:
				log, _ := os.ReadFile(filepath.Join(dir, "kube-apiserver.log"))
				if attempt < 3 && strings.Contains(string(log), "address already in use") {
					goto retry
				}
				return nil, 0, fmt.Errorf("kube-apiserver exited:\n%s", tail(string(log), 30))
			case <-time.After(100 * time.Millisecond):
			}
			if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
				c.Close()
				go func() { <-done; exited <- "kube-apiserver" }()
				return cmd, port, nil
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				return nil, 0, errors.New("kube-apiserver did not listen within 60 s")
			}
		}
	retry:
	}
}

// startChild runs this binary's subcommand NAME, its output in DIR/NAME.log. With `exited`,
// the name is sent there when the process ends.
func startChild(dir, name string, exited chan string, args ...string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{name}, args...)...)
	cmd.Stdout = log
	cmd.Stderr = log
	// A child never outlives us, even when we are killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	log.Close()
	if exited != nil {
		go func() { _ = cmd.Wait(); exited <- name }()
	}
	return cmd, nil
}

func stopAll(children []*exec.Cmd) {
	for _, c := range children {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range children {
		for c.ProcessState == nil && processAlive(c.Process.Pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		_ = c.Process.Kill()
	}
}

func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func restConfig(server, caFile, token string) (*rest.Config, error) {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	return &rest.Config{
		Host:            server,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
		QPS:             100,
		Burst:           200,
	}, nil
}

// waitReady polls /readyz until every check passes.
func waitReady(ctx context.Context, cfg *rest.Config, exited chan string) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cfg.TLSClientConfig.CAData)
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	deadline := time.Now().Add(120 * time.Second)
	last := ""
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", cfg.Host+"/readyz?verbose", nil)
		req.Header.Set("Authorization", "Bearer "+cfg.BearerToken)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = string(body)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case name := <-exited:
			return fmt.Errorf("%s exited while starting", name)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the API server is not ready after 120 s: %s", tail(last, 20))
		}
	}
}

// installCRDs creates (or updates) every CustomResourceDefinition in DIR's *.yaml files and
// waits until each is established.
func installCRDs(ctx context.Context, cfg *rest.Config, dir string) error {
	client, err := apiextensions.NewForConfig(cfg)
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	sort.Strings(files)
	var names []string
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bufio.NewReader(fh), 4096)
		for {
			var crd apiextensionsv1.CustomResourceDefinition
			if err := dec.Decode(&crd); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				fh.Close()
				return fmt.Errorf("%s: %w", f, err)
			}
			if crd.Name == "" {
				continue
			}
			api := client.ApiextensionsV1().CustomResourceDefinitions()
			_, err := api.Create(ctx, &crd, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				old, gerr := api.Get(ctx, crd.Name, metav1.GetOptions{})
				if gerr != nil {
					fh.Close()
					return gerr
				}
				crd.ResourceVersion = old.ResourceVersion
				_, err = api.Update(ctx, &crd, metav1.UpdateOptions{})
			}
			if err != nil {
				fh.Close()
				return fmt.Errorf("%s (%s): %w", f, crd.Name, err)
			}
			names = append(names, crd.Name)
		}
		fh.Close()
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, name := range names {
		for {
			crd, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if established(crd) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s is not established after 60 s", name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func established(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			return true
		}
	}
	return false
}

func waitServiceAccount(ctx context.Context, cfg *rest.Config, exited chan string) error {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(120 * time.Second)
	for {
		_, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case name := <-exited:
			return fmt.Errorf("%s exited while starting", name)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the controller manager made no ServiceAccount within 120 s: %v", err)
		}
	}
}

func writeKubeconfig(path, server, caFile, token string) error {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
  - name: roster-k8s
    cluster:
      server: %s
      certificate-authority-data: %s
users:
  - name: admin
    user:
      token: %s
contexts:
  - name: roster-k8s
    context: {cluster: roster-k8s, user: admin, namespace: default}
current-context: roster-k8s
`, server, base64.StdEncoding.EncodeToString(ca), token)
	return writeAtomic(path, []byte(text), 0o600)
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
