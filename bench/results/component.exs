%{
  bench: "component",
  curves: [],
  date: ~D[2026-12-06],
  details:
    "The component: `symbiont build-wasm bench/bench_agents.py:Counter` (20.4 MB; serialized by wasmtime 36.9 MB). 1000 agents answered one event each and acked it.\n",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 45.5326,
      baseline: "the same class, native",
      measure: "Python agent as a component: publish → handle → ack (µs/message)",
      target: "≤ 8×",
      value: 337.4012
    },
    %{
      base: 6575.991765,
      baseline: "cold compile",
      measure: "load the 20 MB component from the cache (ms)",
      target: "≤ 0.01× (100× faster)",
      value: 43.220132
    },
    %{
      base: 0.248905,
      baseline: "counter.wat, a core module",
      measure: "start an instance: instantiate + init, CPython's start (ms)",
      target: "≤ 5 ms",
      value: 2.1226309999999997
    },
    %{
      base: 19.2802734375,
      baseline: "a native Python host, one agent: PSS",
      measure: "100 instances in one host, after an event each: PSS each (MB)",
      target: "≤ 8 MB",
      value: 1.605078125
    },
    %{
      base: 19.2802734375,
      baseline: "a native Python host, one agent: PSS",
      measure: "the same: RSS each (MB; shared pages counted in each)",
      target: "(info)",
      value: 11.025546875
    },
    %{
      base: 19.2802734375,
      baseline: "a native Python host, one agent: PSS",
      measure: "1000 sandboxed Python agents on 4 hosts, started in 3.3 s: hosts' PSS each (MB)",
      target: "≤ 8 MB",
      value: 2.1099638671875
    }
  ],
  seconds: 22.592
}
