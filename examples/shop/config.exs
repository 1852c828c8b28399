import Config

# The shop of `make shop` (README.md, "The shop"): orders (a Python agent, sandboxed) ->
# pricing (Wasm, from C) -> billing -> notifications. `make shop` runs the node like `make run`, with this file on top of
# config/config.exs (SYMBIONT_CONFIG, read by config/runtime.exs); test/shop_test.exs
# boots these agents too.
config :symbiont,
  python_path: ["examples/shop"],
  agents: [
    # 2 orders a second, 6 in a rush: the first 20 s of every minute. The Python class
    # shop.Orders, unchanged, sandboxed: `make shop` builds it into a Wasm component
    # (symbiont build-wasm examples/shop/shop.py:Orders). It may read the clock (the
    # rush goes by it), nothing else; `python: "shop:Orders"` runs it natively instead.
    [
      name: "orders",
      wasm: "_build/shop/orders.wasm",
      limits: [grants: ["clock"], deadline_ms: 1_000],
      config: %{"rate" => 2, "rush_rate" => 6, "rush_every" => 60, "rush_for" => 20}
    ],
    # The price is the amount with 20% VAT (pricing.c; `make wasm` builds it).
    [
      name: "pricing",
      wasm: "examples/shop/pricing.wasm",
      topics: ["orders.created"],
      config: %{"rate" => 1.2}
    ],
    # Crashes on 1% of the orders it charges, and on half of them while its payment
    # provider is out: 8 s from second 35 of every minute.
    [
      name: "billing",
      python: "shop:Billing",
      config: %{"crash_rate" => 0.01, "outage_at" => 35, "outage_for" => 8}
    ],
    # 0.25 s a receipt: 4 a second at most, less than a rush brings. The conductor
    # scales it out (up to 3) when its queue grows past a third of high_water; a small
    # credit window keeps the backlog in the queue, where the conductor sees it.
    [
      name: "notifications",
      python: "shop:Notifications",
      config: %{"delay" => 0.25},
      max_in_flight: 4,
      high_water: 30,
      max_replicas: 3
    ],
    # 30 s after it starts, deploys pricing v2, which traps on orders of 80 EUR and more.
    [
      name: "release",
      python: "shop:Release",
      config: %{
        "agent" => "pricing",
        "wasm" => "examples/shop/pricing_v2.wasm",
        "after_s" => 30
      }
    ]
  ],
  conductor: [policy: "shop_policy:ShopPolicy", policy_options: %{"probation_s" => 10}]
