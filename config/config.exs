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

# The live status page (Symbiont.StatusPage): http://127.0.0.1:4040/ while the node runs.
config :symbiont, status_page: [port: 4040]

# The environment the config was read in: Symbiont.Manifest.reload/2 reads the file again
# in the same one (a release has no Mix).
config :symbiont, config_env: config_env()

import_config "#{config_env()}.exs"
