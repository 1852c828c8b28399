defmodule Symbiont.Agent.Spec.Limits do
  @moduledoc """
  The bounds of an agent spec (`Symbiont.Agent.Spec`): replicas, queue and in-flight
  bounds in events and bytes, retries, the handler timeout, the overflow policy, the
  nodes of a placed agent, topics and failed starts; each checked and given its default
  (some from `config :symbiont`, `Symbiont.Config`). An error names the agent, the key,
  the value and what is allowed.
  """

  # The largest byte bound taken (the load counters publishers reserve room in are
  # signed 64-bit integers, with room above the bound for one more event).
  @max_bytes Integer.pow(2, 62)

  @doc false
  # An error of the spec's `field`, for the agent `name`: Symbiont.Agent.Spec's
  # validate_spec/1 puts the field in the error's details.
  @spec invalid(term, atom, String.t()) :: {:error, {atom, String.t()}}
  def invalid(name, field, text), do: {:error, {field, "agent #{inspect(name)}: " <> text}}

  @doc false
  # The bounds of the keyword spec of the agent `name`, with their defaults: a map of
  # them, or {:error, {field, message}} for the first one out of range.
  @spec validate_limits(keyword, String.t()) :: {:ok, map} | {:error, {atom, String.t()}}
  def validate_limits(spec, name) do
    with {:ok, replicas} <- positive(spec, :replicas, 1, name),
         {:ok, max_queue} <- positive(spec, :max_queue, 10_000, name),
         {:ok, max_in_flight} <- positive(spec, :max_in_flight, 100, name),
         {:ok, max_queue_bytes} <- bytes(spec, :max_queue_bytes, name),
         {:ok, max_in_flight_bytes} <- bytes(spec, :max_in_flight_bytes, name),
         {:ok, high_water} <- positive(spec, :high_water, max(1, div(max_queue * 4, 5)), name),
         :ok <- at_most(high_water, max_queue, name),
         {:ok, max_attempts} <- positive(spec, :max_attempts, 3, name),
         {:ok, handler_timeout} <- validate_handler_timeout(spec, name),
         {:ok, overflow} <- validate_overflow(Keyword.get(spec, :overflow, :drop_oldest), name),
         {:ok, min} <- positive(spec, :min_replicas, 1, name),
         {:ok, max} <- positive(spec, :max_replicas, max(replicas, 4), name),
         :ok <- within(replicas, min, max, name),
         {:ok, required} <- validate_boolean(spec, :required, true, name),
         {:ok, durable} <- validate_boolean(spec, :durable, false, name),
         {:ok, nodes} <- validate_nodes(Keyword.get(spec, :nodes), name),
         {:ok, dedupe} <- validate_boolean(spec, :dedupe, false, name),
         {:ok, default_topics} <- configured(:max_topics),
         {:ok, max_topics} <- positive(spec, :max_topics, default_topics, name),
         {:ok, default_failures} <- configured(:max_start_failures),
         {:ok, max_start_failures} <-
           positive(spec, :max_start_failures, default_failures, name) do
      {:ok,
       %{
         replicas: replicas,
         min_replicas: min,
         max_replicas: max,
         required: required,
         max_queue: max_queue,
         max_queue_bytes: max_queue_bytes,
         max_in_flight: max_in_flight,
         max_in_flight_bytes: max_in_flight_bytes,
         high_water: high_water,
         max_attempts: max_attempts,
         handler_timeout: handler_timeout,
         overflow: overflow,
         durable: durable,
         nodes: nodes,
         dedupe: dedupe,
         max_topics: max_topics,
         max_start_failures: max_start_failures
       }}
    end
  end

  @doc """
  The `:max_topics` of `spec` (see "Topics"); a spec validated before the key existed
  gets the default.
  """
  @spec max_topics(map) :: pos_integer
  def max_topics(%{max_topics: n}) when is_integer(n), do: n

  def max_topics(_spec), do: setting(:max_topics)

  # A default of config :symbiont, validated (Symbiont.Config).
  defp configured(key), do: Symbiont.Config.fetch(key)

  # The same, or the key's own default when the setting is out of range (the spec that
  # needs it was validated already; the application refuses to start with it).
  defp setting(key) do
    case configured(key) do
      {:ok, n} -> n
      {:error, _} -> Symbiont.Config.keys()[key]
    end
  end

  # A byte bound of the spec, else of the application env, else its default.
  defp bytes(spec, key, name) do
    with {:ok, default} <- default_bytes(key) do
      case Keyword.get(spec, key, default) do
        n when is_integer(n) and n > 0 and n <= @max_bytes ->
          {:ok, n}

        other ->
          invalid(
            name,
            key,
            "expected #{inspect(key)} to be a positive integer of bytes, " <>
              "at most 2**62, got: #{inspect(other)}"
          )
      end
    end
  end

  @doc false
  # The default of a byte bound (config :symbiont's).
  @spec default_bytes(atom) :: {:ok, pos_integer} | {:error, Symbiont.Error.t()}
  def default_bytes(key), do: configured(key)

  @doc """
  The `:max_start_failures` of `spec` (see "Agents that cannot start"); a spec validated
  before the key existed gets the default.
  """
  @spec max_start_failures(map) :: pos_integer
  def max_start_failures(%{max_start_failures: n}) when is_integer(n), do: n

  def max_start_failures(_spec), do: setting(:max_start_failures)

  defp positive(spec, key, default, name) do
    case Keyword.get(spec, key, default) do
      n when is_integer(n) and n > 0 ->
        {:ok, n}

      other ->
        invalid(
          name,
          key,
          "expected #{inspect(key)} to be a positive integer, got: #{inspect(other)}"
        )
    end
  end

  defp at_most(high_water, max_queue, _name) when high_water <= max_queue, do: :ok

  defp at_most(high_water, max_queue, name),
    do:
      invalid(
        name,
        :high_water,
        "expected :high_water to be at most :max_queue (#{max_queue}), got: #{high_water}"
      )

  defp within(replicas, min, max, _name) when min <= replicas and replicas <= max, do: :ok

  defp within(replicas, min, max, name),
    do:
      invalid(
        name,
        :replicas,
        "expected :min_replicas <= :replicas <= :max_replicas, got: #{min} <= #{replicas} <= #{max}"
      )

  defp validate_boolean(spec, key, default, name) do
    case Keyword.get(spec, key, default) do
      value when is_boolean(value) ->
        {:ok, value}

      other ->
        invalid(name, key, "expected #{inspect(key)} to be true or false, got: #{inspect(other)}")
    end
  end

  # Node names as atoms ("name@host"); strings are taken too (a manifest read from JSON,
  # say). The list is a preference order, so a node given twice is a mistake.
  defp validate_nodes(nil, _name), do: {:ok, nil}

  defp validate_nodes([_ | _] = nodes, name) do
    normalized = Enum.map(nodes, &node_name/1)

    cond do
      Enum.any?(normalized, &is_nil/1) ->
        bad = Enum.find(nodes, &is_nil(node_name(&1)))

        invalid(
          name,
          :nodes,
          "#{inspect(bad)} in :nodes is not a node name " <>
            "(allowed: atoms or strings of the form \"name@host\")"
        )

      length(Enum.uniq(normalized)) != length(normalized) ->
        invalid(name, :nodes, "expected :nodes to name each node once, got: #{inspect(nodes)}")

      true ->
        {:ok, normalized}
    end
  end

  defp validate_nodes(other, name),
    do:
      invalid(
        name,
        :nodes,
        "expected :nodes to be a non-empty list of node names " <>
          "(like :\"a@host\"), got: #{inspect(other)}"
      )

  defp node_name(node) when is_atom(node) and node not in [nil, true, false],
    do: node_name(Atom.to_string(node))

  defp node_name(node) when is_binary(node) do
    if node =~ ~r/\A[A-Za-z0-9_\-]+@[A-Za-z0-9_.\-]+\z/,
      do: String.to_atom(node),
      else: nil
  end

  defp node_name(_), do: nil

  defp validate_handler_timeout(spec, name) do
    case Keyword.get(spec, :handler_timeout, 30_000) do
      :infinity ->
        {:ok, :infinity}

      # Its host takes at most 2^32-1 ms (PROTOCOL.md §9), the agent's own watch 1 s more.
      ms when is_integer(ms) and ms > 0 and ms <= 0xFFFFFFFF - 5_000 ->
        {:ok, ms}

      ms when is_integer(ms) and ms > 0 ->
        invalid(name, :handler_timeout, Symbiont.Host.too_long(:handler_timeout, ms))

      other ->
        invalid(
          name,
          :handler_timeout,
          "expected :handler_timeout to be a positive integer (milliseconds) or :infinity, got: #{inspect(other)}"
        )
    end
  end

  defp validate_overflow(policy, _name) when policy in [:drop_oldest, :reject], do: {:ok, policy}

  defp validate_overflow(policy, name),
    do:
      invalid(
        name,
        :overflow,
        "expected :overflow to be :drop_oldest or :reject, got: #{inspect(policy)}"
      )
end
