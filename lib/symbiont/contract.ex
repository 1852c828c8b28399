defmodule Symbiont.Contract do
  @moduledoc """
  What the BEAM and the Python side must agree on, read from one file:
  `python/symbiont/contract.json` (inside the Python package, so that Python reads it
  with `importlib.resources`, installed or not; `symbiont._contract` there). This module
  reads it when it compiles (`@external_resource`: editing the file recompiles it).

  It holds the health kinds, the remediation and policy actions, the agent-name rule,
  the Wasm sandbox's limits and their defaults, and the keys of the conductor's
  snapshot. test/symbiont/contract_test.exs checks the BEAM's side against it (a real
  snapshot has exactly these keys) and python/tests/test_contract.py the Python side
  (its `TypedDict` of the snapshot, and every key the policy reads): drift between
  the two languages is a test failure.

      iex> "failing" in Symbiont.Contract.health_kinds()
      true
      iex> {Symbiont.Contract.agent_name?("billing-2"), Symbiont.Contract.agent_name?("no spaces")}
      {true, false}
  """

  @path Path.expand("../../python/symbiont/contract.json", __DIR__)
  @external_resource @path
  @contract @path |> File.read!() |> Symbiont.StatusPage.JSON.decode!()

  @doc "The whole contract, as decoded from the file (string keys)."
  @spec all() :: map
  def all, do: @contract

  @doc "Every health kind an event on `symbiont.health` may have."
  @spec health_kinds() :: [String.t()]
  def health_kinds, do: @contract["health"]["kinds"]

  @doc "The health kinds an agent may report of itself (`self.health`, the Wasm import)."
  @spec agent_health_kinds() :: [String.t()]
  def agent_health_kinds, do: @contract["health"]["agent_kinds"]

  @doc "The health kinds of a running agent, the worst first (`Symbiont.Observation.worst/1`)."
  @spec health_worst_first() :: [String.t()]
  def health_worst_first, do: @contract["health"]["worst_first"]

  @doc "Every action a remediation event may name (`Symbiont.Remediation`)."
  @spec remediation_actions() :: [String.t()]
  def remediation_actions, do: @contract["actions"]["remediation"]

  @doc "The actions a conductor's policy may return (`Symbiont.Conductor`)."
  @spec policy_actions() :: [String.t()]
  def policy_actions, do: @contract["actions"]["policy"]

  @doc "The actions that answer the evidence before them (the conductor's remedies)."
  @spec remedies() :: [String.t()]
  def remedies, do: @contract["actions"]["remedies"]

  @doc """
  What an agent's own health report may hold (PROTOCOL.md §8.3): `"reason_bytes"`,
  `"metrics"` (how many), `"metric_name_bytes"`, `"metric_text_bytes"`.
  """
  @spec health_report() :: %{String.t() => pos_integer}
  def health_report, do: @contract["health"]["report"]

  @doc "The prefix of the topics only Symbiont publishes on (`Symbiont.ControlPlane`)."
  @spec reserved_topic_prefix() :: String.t()
  def reserved_topic_prefix, do: @contract["names"]["reserved_topic_prefix"]

  @doc "The rule an agent's name follows, as regular-expression source (whole name)."
  @spec agent_name_rule() :: String.t()
  def agent_name_rule, do: @contract["names"]["agent"]

  @doc "Whether `name` is a valid agent name (`agent_name_rule/0`)."
  @spec agent_name?(term) :: boolean
  def agent_name?(name) when is_binary(name),
    do: Regex.match?(Regex.compile!("\\A(?:#{agent_name_rule()})\\z"), name)

  def agent_name?(_name), do: false

  @doc """
  The Wasm sandbox's integer limits and their defaults (docs/WASM_ABI.md §5), in the
  order the docs give them: `{name, default}`, the default `nil` for none.
  """
  @spec wasm_limits() :: [{atom, pos_integer | nil}]
  def wasm_limits,
    do: for([key, default] <- @contract["wasm"]["limits"], do: {String.to_atom(key), default})

  @doc "The largest value a Wasm limit may have (wasmtime takes them as signed 64-bit)."
  @spec wasm_max_limit() :: pos_integer
  def wasm_max_limit, do: @contract["wasm"]["max_limit"]

  @doc "The WASI capabilities a Wasm agent may be granted."
  @spec wasm_grants() :: [String.t()]
  def wasm_grants, do: @contract["wasm"]["grants"]

  @doc "The keys of the conductor's snapshot (`Symbiont.Conductor.snapshot/1`)."
  @spec snapshot_keys() :: [String.t()]
  def snapshot_keys, do: @contract["snapshot"]["keys"]

  @doc "The keys of each agent's map in the snapshot, as the BEAM builds it."
  @spec snapshot_agent_keys() :: [String.t()]
  def snapshot_agent_keys, do: @contract["snapshot"]["agent_keys"]
end
