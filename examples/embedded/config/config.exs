import Config

# Where the agents' Python modules are (relative to where the node starts).
config :symbiont, python_path: ["agents"]
# The node's own conductor heals the node's own agents; this app has none (each
# instance has its conductor), so it is off.
config :symbiont, conductor: [enabled: false]
config :logger, level: :info
