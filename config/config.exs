import Config

# Python output and protocol errors land in Logger with the host's and agent's names.
config :logger, :console,
  format: "$time [$level] $metadata$message\n",
  metadata: [:agent]

# The demo system of `make run` (examples/demo). Agents are declared here; see Symbiont.Agent.
config :symbiont,
  python_path: ["examples/demo"],
  agents: [
    [name: "orders", python: "demo_agents:Orders"],
    [name: "billing", python: "demo_agents:Billing", config: %{"currency" => "EUR"}],
    [name: "notifier", python: "demo_agents:Notifier"]
  ]

import_config "#{config_env()}.exs"
