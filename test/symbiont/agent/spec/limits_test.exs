defmodule Symbiont.Agent.Spec.LimitsTest do
  # The bounds of an agent spec (Symbiont.Agent.Spec.Limits), through the public
  # validate_spec/1: their defaults, the forms they take, and an error that names the
  # field. Pure: no host, no Python.
  use ExUnit.Case, async: true

  alias Symbiont.Agent.Spec.Limits

  defp spec!(extra) do
    {:ok, spec} = Symbiont.Agent.validate_spec([name: "lim", python: "m:C"] ++ extra)
    spec
  end

  defp field(extra) do
    {:error, %Symbiont.Error{reason: :invalid, details: details, message: message}} =
      Symbiont.Agent.validate_spec([name: "lim", python: "m:C"] ++ extra)

    assert message =~ ~s(agent "lim": )
    details.field
  end

  test "every bound has its default" do
    spec = spec!([])

    assert Map.take(spec, [:replicas, :min_replicas, :max_replicas, :max_queue, :high_water]) ==
             %{
               replicas: 1,
               min_replicas: 1,
               max_replicas: 4,
               max_queue: 10_000,
               high_water: 8_000
             }

    assert %{max_in_flight: 100, max_attempts: 3, handler_timeout: 30_000} = spec
    assert %{overflow: :drop_oldest, durable: false, dedupe: false, nodes: nil} = spec
    assert %{required: true, max_topics: 1_000, max_start_failures: 5} = spec
    assert spec.max_queue_bytes == Symbiont.Config.get(:max_queue_bytes)
    assert spec.max_in_flight_bytes == Symbiont.Config.get(:max_in_flight_bytes)
  end

  test "the high-water mark follows the queue, and stays under it" do
    assert spec!(max_queue: 10).high_water == 8
    assert spec!(max_queue: 1).high_water == 1
    assert field(max_queue: 10, high_water: 11) == :high_water
  end

  test "replicas stay within their bounds; the maximum grows with them" do
    assert %{replicas: 6, max_replicas: 6} = spec!(replicas: 6)
    assert field(replicas: 2, min_replicas: 3) == :replicas
    assert field(replicas: 0) == :replicas
  end

  test "nodes: atoms or strings of name@host, each once, in order" do
    assert spec!(nodes: ["a@h", :b@h]).nodes == [:a@h, :b@h]
    assert field(nodes: [:a@h, "a@h"]) == :nodes
    assert field(nodes: ["nohost"]) == :nodes
    assert field(nodes: []) == :nodes
  end

  test "a handler timeout is milliseconds a host's timer can take, or :infinity" do
    assert spec!(handler_timeout: :infinity).handler_timeout == :infinity
    assert field(handler_timeout: 0xFFFFFFFF) == :handler_timeout
    assert field(handler_timeout: 1.5) == :handler_timeout
  end

  test "byte bounds are positive and at most 2**62" do
    assert spec!(max_queue_bytes: 4_096).max_queue_bytes == 4_096
    assert field(max_queue_bytes: Integer.pow(2, 62) + 1) == :max_queue_bytes
    assert field(max_in_flight_bytes: 0) == :max_in_flight_bytes
  end

  test "a spec validated before a bound existed gets its default" do
    assert Limits.max_topics(%{}) == 1_000
    assert Limits.max_topics(%{max_topics: 7}) == 7
    assert Limits.max_start_failures(%{}) == 5
  end
end
