import Config

# Tests start the hosts and agents they need.
config :symbiont, agents: [], python_path: []
config :logger, level: :warning
config :logger, :console, metadata: [:host, :agent]
