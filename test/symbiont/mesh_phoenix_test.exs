if Code.ensure_loaded?(Phoenix.PubSub) do
  defmodule Symbiont.Mesh.PhoenixPubSubTest do
    # The mesh suite again, on the real Phoenix.PubSub (make test-phoenix).
    use Symbiont.MeshCases, adapter: Symbiont.Mesh.PhoenixPubSub, tags: [:phoenix_pubsub]
  end
end
