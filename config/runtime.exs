import Config

# SYMBIONT_CONFIG=path runs the node with another system: that config file (written like
# config/config.exs) is applied on top of config/config.exs. `make shop` sets it to
# examples/shop/config.exs; `Symbiont.reload_manifest/0` reads the same file. Tests
# start the agents they need, so the test environment ignores it. A relative path is
# resolved against the project's directory, or a release's app/ (README.md, "Releases").
path = System.get_env("SYMBIONT_CONFIG", "")

if path != "" and config_env() != :test do
  for {app, settings} <- Config.Reader.read!(Symbiont.Config.resolve(path), env: config_env()),
      do: config(app, settings)
end
