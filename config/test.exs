import Config

# Tests start the hosts and agents they need.
config :symbiont, agents: [], python_path: []
# Tests start the conductors they need, each watching its own agents.
config :symbiont, conductor: [enabled: false]
# The status page's test starts its own, on a free port.
config :symbiont, status_page: false
config :logger, level: :warning
config :logger, :console, metadata: [:host, :agent]
# Durable agents' journals (Symbiont.Journal): a directory of this run's own, removed when
# the suite ends (test_helper.exs). Peer nodes get the same one, as shared storage.
config :symbiont, data_dir: Path.join(System.tmp_dir!(), "symbiont-test-#{System.pid()}")
