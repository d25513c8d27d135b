"""Real-kernel test harness for ebpf.fleet (network namespaces, links, bpffs, module runner)."""
