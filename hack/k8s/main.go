// roster-k8s: a real Kubernetes control plane for Roster's tests and demos, built from the
// Kubernetes Go modules (kube-apiserver, kube-controller-manager and embedded etcd), on
// loopback only.
//
//	roster-k8s up --dir DIR [--crds DIR] [--apiserver-arg=--flag=value ...] [--exit-with-stdin]
//	roster-k8s kube-apiserver FLAGS...           (what `up` runs as a child process)
//	roster-k8s kube-controller-manager FLAGS...  (likewise)
//	roster-k8s version
//
// `up` writes DIR/kubeconfig (cluster-admin through a static token) last: once it exists the
// control plane is ready, the CRDs given are established and the controller manager runs.
// It also serves a fault-injecting proxy in front of the API server (proxy.go) whose address
// is in DIR/proxy-address.
package main

import (
	"fmt"
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: roster-k8s up|kube-apiserver|kube-controller-manager|version ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "kube-apiserver":
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	case "kube-controller-manager":
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	case "up":
		if err := up(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "roster-k8s up:", err)
			os.Exit(1)
		}
	case "version":
		fmt.Println(version.Get().GitVersion)
	default:
		fmt.Fprintf(os.Stderr, "roster-k8s: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}
