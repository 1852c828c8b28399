%{
  bench: "component",
  curves: [],
  date: ~D[2026-12-07],
  details:
    "The component: `symbiont build-wasm bench/bench_agents.py:Counter` (18.9 MB; serialized by wasmtime 35.3 MB). 1000 agents answered one event each and acked it.\n",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 36.451,
      baseline: "the same class, native",
      measure: "Python agent as a component: publish → handle → ack (µs/message)",
      target: "≤ 8×",
      value: 260.1452
    },
    %{
      base: 5125.375554,
      baseline: "cold compile",
      measure: "load the 19 MB component from the cache (ms)",
      target: "≤ 0.01× (100× faster)",
      value: 37.637338
    },
    %{
      base: 0.15458499999999997,
      baseline: "counter.wat, a core module",
      measure: "start an instance: instantiate + init, CPython's start (ms)",
      target: "≤ 5 ms",
      value: 1.6467224999999999
    },
    %{
      base: 12.0478515625,
      baseline: "a native Python host, one agent: PSS",
      measure: "100 instances in one host, after an event each: PSS each (MB)",
      target: "≤ 8 MB",
      value: 1.59625
    },
    %{
      base: 12.0478515625,
      baseline: "a native Python host, one agent: PSS",
      measure: "the same: RSS each (MB; shared pages counted in each)",
      target: "(info)",
      value: 10.0383203125
    },
    %{
      base: 12.0478515625,
      baseline: "a native Python host, one agent: PSS",
      measure: "1000 sandboxed Python agents on 4 hosts, started in 3.1 s: hosts' PSS each (MB)",
      target: "≤ 8 MB",
      value: 2.0708759765625
    }
  ],
  seconds: 31.289
}
