import Config

# A release logs at :info (the debug lines of hosts and agents stay out).
config :logger, level: :info
