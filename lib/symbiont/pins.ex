defmodule Symbiont.Pins do
  @moduledoc """
  The operator's word holds: what is set by hand is **pinned**, and the conductor
  proposes and applies nothing that would change it until the pin is lifted
  (`Symbiont.unpin/1`) or its hold expires.

  | set by hand with | pins | the conductor then leaves alone |
  |---|---|---|
  | `Symbiont.scale/3` | `"replicas"`: the count | `scale`, `retire` |
  | `Symbiont.quarantine/2` | `"quarantine"`: `true` | `quarantine`, `release` |
  | `Symbiont.release/1` | `"quarantine"`: `false` | `quarantine`, `release` |
  | `Symbiont.rollback/1` | `"version"`: the version rolled back to | `rollback`, `deploy` |

  (`Symbiont.restart/1` pins nothing: it changes nothing the conductor could undo. It
  starts the agent's failure window over, is no crash, and is audited.)

  A pin holds for `pin_hold_ms` (`config :symbiont, conductor: [pin_hold_ms: ms]`, a
  positive integer or `:infinity`; default #{600_000} ms, ten minutes), or the
  `:hold_ms` given with the call. Pins are shown by `Symbiont.status/0`, on the status
  page, and in the conductor's snapshot (`"pins"`, `"pinned"`); the conductor's policy
  skips pinned fields, and the conductor refuses an action on one (recorded once in the
  audit trail, not once a tick).

      iex> Symbiont.Pins.validate_hold(:infinity)
      {:ok, :infinity}
      iex> {:error, error} = Symbiont.Pins.validate_hold(0)
      iex> error.message
      "expected :pin_hold_ms of the conductor to be a positive integer (milliseconds) or :infinity, got: 0"
  """

  @table __MODULE__
  @fields ~w(replicas quarantine version)
  @default_hold_ms 600_000

  @typedoc """
  A pin: `value` (what was set), `by` (`"operator"`), `reason`, `at_ms` and `until_ms`
  (system ms; `nil`: until lifted).
  """
  @type pin :: %{
          value: term,
          by: String.t(),
          reason: String.t(),
          at_ms: integer,
          until_ms: integer | nil
        }

  @doc "The fields that can be pinned."
  @spec fields() :: [String.t()]
  def fields, do: @fields

  @doc false
  # Created by Symbiont.Observation's process, which owns it.
  def new_table,
    do: :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])

  @doc """
  How long a pin holds by default: `pin_hold_ms` of `config :symbiont, conductor: [...]`
  (#{@default_hold_ms} ms when unset). Raises `ArgumentError` for a bad value.
  """
  @spec hold_ms() :: pos_integer | :infinity
  def hold_ms do
    case validate_hold(configured_hold()) do
      {:ok, ms} -> ms
      {:error, error} -> raise ArgumentError, Exception.message(error)
    end
  end

  @doc false
  # The configured hold, not validated (the application validates it as it starts).
  @spec configured_hold() :: term
  def configured_hold do
    :conductor
    |> Symbiont.Config.get()
    |> Keyword.get(:pin_hold_ms, @default_hold_ms)
  end

  @doc """
  Validates a hold: a positive integer (milliseconds) or `:infinity`; else an `:invalid`
  `Symbiont.Error`.

      iex> Symbiont.Pins.validate_hold(:infinity)
      {:ok, :infinity}
      iex> {:error, error} = Symbiont.Pins.validate_hold(0)
      iex> {error.reason, error.details}
      {:invalid, %{field: :pin_hold_ms, value: 0}}
  """
  @spec validate_hold(term) :: {:ok, pos_integer | :infinity} | {:error, Symbiont.Error.t()}
  def validate_hold(ms) when (is_integer(ms) and ms > 0) or ms == :infinity, do: {:ok, ms}

  def validate_hold(other),
    do:
      {:error,
       Symbiont.Error.new(
         :invalid,
         "expected :pin_hold_ms of the conductor to be a positive integer (milliseconds) or :infinity, got: #{inspect(other)}",
         field: :pin_hold_ms,
         value: other
       )}

  @doc """
  Pins `field` of agent `name` at `value`. Options: `:hold_ms` (default `hold_ms/0`),
  `:reason`. Returns the pin, or an `:invalid` `Symbiont.Error` for a bad `:hold_ms`
  (`validate_hold/1`).
  """
  @spec pin(String.t(), String.t(), term, keyword) :: {:ok, pin} | {:error, Symbiont.Error.t()}
  def pin(name, field, value, opts \\ []) when is_binary(name) and field in @fields do
    with {:ok, hold} <- validate_hold(Keyword.get_lazy(opts, :hold_ms, &hold_ms/0)) do
      now = System.system_time(:millisecond)

      pin = %{
        value: value,
        by: "operator",
        reason: Keyword.get(opts, :reason, "set by hand"),
        at_ms: now,
        until_ms: if(hold == :infinity, do: nil, else: now + hold)
      }

      :ets.insert(@table, {{name, field}, pin})
      {:ok, pin}
    end
  end

  @doc "Lifts every pin of agent `name`; returns the fields that were pinned."
  @spec unpin(String.t()) :: [String.t()]
  def unpin(name) when is_binary(name) do
    pinned = name |> of() |> Map.keys() |> Enum.sort()
    for field <- @fields, do: :ets.delete(@table, {name, field})
    pinned
  end

  @doc "The pins in force on agent `name`, by field."
  @spec of(String.t()) :: %{String.t() => pin}
  def of(name) when is_binary(name) do
    now = System.system_time(:millisecond)

    for field <- @fields, [{_, pin}] <- [lookup({name, field})], live?(pin, now), into: %{} do
      {field, pin}
    end
  end

  @doc "The pins in force on every agent: `%{name => %{field => pin}}`."
  @spec all() :: %{String.t() => %{String.t() => pin}}
  def all do
    now = System.system_time(:millisecond)

    rows =
      try do
        :ets.tab2list(@table)
      rescue
        ArgumentError -> []
      end

    Enum.reduce(rows, %{}, fn {{name, field}, pin}, acc ->
      if live?(pin, now),
        do: Map.update(acc, name, %{field => pin}, &Map.put(&1, field, pin)),
        else: acc
    end)
  end

  @doc """
  What a pin says, for a message or a screen: `"replicas 3 until 10:42:07"`.
  """
  @spec describe(String.t(), pin) :: String.t()
  def describe(field, %{value: value, until_ms: until}) do
    until = if until, do: "until #{Symbiont.Console.time(until)}", else: "until lifted"
    "#{field} #{inspect(value)} #{until}"
  end

  defp live?(%{until_ms: nil}, _now), do: true
  defp live?(%{until_ms: until}, now), do: now < until

  defp lookup(key) do
    :ets.lookup(@table, key)
  rescue
    ArgumentError -> []
  end
end
