%{
  bench: "component",
  curves: [],
  date: ~D[2026-12-07],
  details:
    "The component: `symbiont build-wasm bench/bench_agents.py:Counter` (20.8 MB; serialized by wasmtime 37.2 MB). 1000 agents answered one event each and acked it.\n",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 38.4,
      baseline: "the same class, native",
      measure: "Python agent as a component: publish → handle → ack (µs/message)",
      target: "≤ 8×",
      value: 236.5772
    },
    %{
      base: 5759.998872,
      baseline: "cold compile",
      measure: "load the 21 MB component from the cache (ms)",
      target: "≤ 0.01× (100× faster)",
      value: 40.535405
    },
    %{
      base: 0.17506549999999999,
      baseline: "counter.wat, a core module",
      measure: "start an instance: instantiate + init, CPython's start (ms)",
      target: "≤ 5 ms",
      value: 1.7531709999999998
    },
    %{
      base: 16.6337890625,
      baseline: "a native Python host, one agent: PSS",
      measure: "100 instances in one host, after an event each: PSS each (MB)",
      target: "≤ 8 MB",
      value: 1.5587890625
    },
    %{
      base: 16.6337890625,
      baseline: "a native Python host, one agent: PSS",
      measure: "the same: RSS each (MB; shared pages counted in each)",
      target: "(info)",
      value: 11.439453125
    },
    %{
      base: 16.6337890625,
      baseline: "a native Python host, one agent: PSS",
      measure: "1000 sandboxed Python agents on 4 hosts, started in 4.3 s: hosts' PSS each (MB)",
      target: "≤ 8 MB",
      value: 2.0864267578125
    }
  ],
  seconds: 34.711
}
