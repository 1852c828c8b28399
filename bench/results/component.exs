%{
  bench: "component",
  curves: [],
  date: ~D[2026-12-06],
  details:
    "The component: `symbiont build-wasm bench/bench_agents.py:Counter` (20.5 MB; serialized by wasmtime 36.9 MB). 1000 agents answered one event each and acked it.\n",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 73.1364,
      baseline: "the same class, native",
      measure: "Python agent as a component: publish → handle → ack (µs/message)",
      target: "≤ 8×",
      value: 1426.725
    },
    %{
      base: 6719.421817,
      baseline: "cold compile",
      measure: "load the 20 MB component from the cache (ms)",
      target: "≤ 0.01× (100× faster)",
      value: 100.03545
    },
    %{
      base: 0.1643595,
      baseline: "counter.wat, a core module",
      measure: "start an instance: instantiate + init, CPython's start (ms)",
      target: "≤ 5 ms",
      value: 1.8431549999999999
    },
    %{
      base: 19.4375,
      baseline: "a native Python host, one agent: PSS",
      measure: "100 instances in one host, after an event each: PSS each (MB)",
      target: "≤ 8 MB",
      value: 1.4750390625
    },
    %{
      base: 19.4375,
      baseline: "a native Python host, one agent: PSS",
      measure: "the same: RSS each (MB; shared pages counted in each)",
      target: "(info)",
      value: 10.1452734375
    },
    %{
      base: 19.4375,
      baseline: "a native Python host, one agent: PSS",
      measure: "1000 sandboxed Python agents on 4 hosts, started in 14.3 s: hosts' PSS each (MB)",
      target: "≤ 8 MB",
      value: 2.1274658203125
    }
  ],
  seconds: 53.961
}
