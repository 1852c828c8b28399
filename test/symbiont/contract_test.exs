defmodule Symbiont.ContractTest do
  # The BEAM's side of the contract between the languages (python/symbiont/contract.json,
  # Symbiont.Contract); python/tests/test_contract.py checks the Python side against the
  # same file. A real snapshot is read from a conductor watching a real Wasm agent.
  use ExUnit.Case, async: false

  import Symbiont.HostHelpers

  alias Symbiont.Contract

  doctest Symbiont.Contract

  test "health kinds, actions and the reserved prefix are the contract's" do
    assert Symbiont.Health.kinds() == Contract.health_kinds()
    assert Symbiont.Remediation.actions() == Contract.remediation_actions()
    assert Contract.policy_actions() -- Contract.remediation_actions() == []
    assert Contract.remedies() -- Contract.policy_actions() == []
    assert Enum.sort(Contract.health_worst_first()) -- Contract.health_kinds() == []
    assert Symbiont.Observation.worst(Contract.health_kinds()) == "quarantined"
    assert Symbiont.ControlPlane.reserved?("#{Contract.reserved_topic_prefix()}anything")
  end

  test "the agent-name rule and the Wasm limits are the ones validation applies" do
    assert {:error, %Symbiont.Error{reason: :invalid, message: message}} =
             Symbiont.Agent.validate_spec(name: "a b", python: "m:C")

    assert message =~ "agent :name"
    assert {:ok, _} = Symbiont.Agent.validate_spec(name: String.duplicate("x", 64), python: "m:C")

    wasm = Path.expand("priv/wasm/counter.wat")

    for {limit, _default} <- Contract.wasm_limits() do
      assert {:ok, _} =
               Symbiont.Agent.validate_spec(
                 name: "limits",
                 wasm: wasm,
                 topics: ["t"],
                 limits: [{limit, 1}]
               )
    end

    assert {:error, %Symbiont.Error{reason: :invalid, message: message}} =
             Symbiont.Agent.validate_spec(
               name: "limits",
               wasm: wasm,
               topics: ["t"],
               limits: [bogus: 1]
             )

    for {limit, _} <- Contract.wasm_limits(), do: assert(message =~ Atom.to_string(limit))
    for grant <- Contract.wasm_grants(), do: assert(message =~ grant)

    assert {:error, %Symbiont.Error{reason: :invalid}} =
             Symbiont.Agent.validate_spec(
               name: "limits",
               wasm: wasm,
               topics: ["t"],
               limits: [deadline_ms: Contract.wasm_max_limit() + 1]
             )
  end

  test "a real snapshot has exactly the contract's keys" do
    prefix = unique_name("contract")
    a = "#{prefix}-counter"

    m =
      start_manifest!([
        [name: a, wasm: Path.expand("priv/wasm/counter.wat"), topics: ["#{prefix}.in"]]
      ])

    policy_host = unique_name("contract-policy")
    name = :"contract_conductor_#{System.unique_integer([:positive])}"

    start_supervised!(
      {Symbiont.Conductor,
       name: name,
       tick_ms: 60_000,
       manifest: m,
       policy_host: policy_host,
       scope: &String.starts_with?(&1, prefix)},
      id: name
    )

    on_exit(fn -> Symbiont.Python.stop(policy_host) end)
    wait_until(fn -> match?(%{status: :ready}, Symbiont.Observation.replica(a)) end, 10_000)

    snapshot = Symbiont.Conductor.snapshot(name)
    assert Enum.sort(Map.keys(snapshot)) == Enum.sort(Contract.snapshot_keys())
    assert [agent] = snapshot["agents"]
    assert Enum.sort(Map.keys(agent)) == Enum.sort(Contract.snapshot_agent_keys())
    # The policy gets it through msgpack: the Python side's TypedDict has these keys.
    assert map_size(agent) <= 32
  end
end
