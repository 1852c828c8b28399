defmodule Symbiont.Placement do
  @moduledoc """
  Where Wasm replicas run: the shared host a new replica goes to (`pick/3`, which the
  manifest asks for each replica it starts: at start, on a scale by hand or by the
  conductor, on a reload), and the move of a replica to a host of its own
  (`reroute/2`, the conductor's `reroute`). The rules are told in "Placement" in
  `Symbiont.Manifest`; the signal they read is `Symbiont.Host.Usage`.

  Options, each also an application env of the same name (`config :symbiont, ...`) and a
  `Symbiont.Manifest` option:

    * `:busy_host_utilisation` - a shared host whose utilisation over its last
      heartbeats is above this (0.0 to 1.0) is busy: no new replica goes there while
      another host can take it. Default: 0.7.
    * `:max_wasm_hosts` - how many shared Wasm hosts the manifest opens to keep replicas
      off busy hosts and off their siblings' hosts (a host is one thread: more busy
      hosts than cores buy nothing). Hosts opened because the others are full
      (`:wasm_agents_per_host`) do not count against it. Default: 8.
  """

  require Logger

  alias Symbiont.Agent.Server
  alias Symbiont.Host.Usage

  @doc """
  The placement options (see the moduledoc) from `opts`, else `config :symbiont`
  (`Symbiont.Config`, whose rules and defaults they are), validated. Raises
  `ArgumentError` naming the option, the value and what is allowed.

      iex> Symbiont.Placement.options!(max_wasm_hosts: 4)
      [busy_host_utilisation: 0.7, max_wasm_hosts: 4]
      iex> Symbiont.Placement.options!(busy_host_utilisation: 2)
      ** (ArgumentError) expected :busy_host_utilisation to be a number from 0.0 to 1.0 (a share of the host's time), got: 2
  """
  @spec options!(keyword) :: keyword
  def options!(opts \\ []) do
    for key <- [:busy_host_utilisation, :max_wasm_hosts] do
      checked =
        case Keyword.fetch(opts, key) do
          {:ok, value} -> Symbiont.Config.check_option(key, value)
          :error -> Symbiont.Config.fetch(key)
        end

      case Symbiont.Error.wrap(checked, :invalid) do
        {:ok, value} -> {key, value}
        {:error, error} -> raise ArgumentError, Exception.message(error)
      end
    end
  end

  @doc """
  The shared host for a new replica of Wasm agent `name`, given where the replicas of the
  manifest run (`placed`: replica id => host) and the options `:prefix` (of the shared
  hosts' names, `"wasm"`), `:per_host` (agents a host takes), `:busy_host_utilisation`,
  `:max_wasm_hosts` (see the moduledoc) and `:utilisation` (a function from host name
  to its utilisation or `nil`, default `Symbiont.Host.Usage.utilisation/1`):

    1. the first shared host (by number) with room that runs no replica of the agent
       (the replica it is to relieve shares no thread with it) and is not busy;
    2. else a new host (the lowest free number), while there are fewer than
       `:max_wasm_hosts`;
    3. else, the least busy host with room, one that runs no replica of the agent first
       (`{:crowded, host}`: every host is busy or runs its replicas);
    4. a new host when none has room, whatever `:max_wasm_hosts` says.

      iex> opts = [prefix: "wasm", per_host: 2, utilisation: &%{"wasm#1" => 0.9}[&1]]
      iex> Symbiont.Placement.pick("slow", %{"slow" => "wasm#1", "fast" => "wasm#2"}, opts)
      {:ok, "wasm#2"}
      iex> Symbiont.Placement.pick("slow", %{"slow" => "wasm#1", "slow#2" => "wasm#2"}, opts)
      {:ok, "wasm#3"}
      iex> Symbiont.Placement.pick("fast", %{"slow" => "wasm#1"}, opts)
      {:ok, "wasm#2"}
      iex> Symbiont.Placement.pick("other", %{"a" => "wasm#2"}, opts)
      {:ok, "wasm#2"}
      iex> Symbiont.Placement.pick("slow", %{"slow" => "wasm#1"}, [max_wasm_hosts: 1] ++ opts)
      {:crowded, "wasm#1"}
  """
  @spec pick(String.t(), %{String.t() => String.t()}, keyword) ::
          {:ok | :crowded, String.t()}
  def pick(name, placed, opts) do
    prefix = Keyword.get(opts, :prefix, "wasm") <> "#"
    per_host = Keyword.fetch!(opts, :per_host)
    utilisation = Keyword.get(opts, :utilisation, &Usage.utilisation/1)
    opts = options!(opts)

    # The shared hosts the manifest's replicas run in, by number, and their load.
    load =
      for {_id, host} <- placed, number(host, prefix) != nil, reduce: %{} do
        acc -> Map.update(acc, host, 1, &(&1 + 1))
      end

    hosts = load |> Map.keys() |> Enum.sort_by(&number(&1, prefix))

    siblings =
      MapSet.new(for {id, host} <- placed, Symbiont.Manifest.agent_name(id) == name, do: host)

    with_room = Enum.filter(hosts, &(load[&1] < per_host))
    busy? = fn host -> (utilisation.(host) || 0.0) > opts[:busy_host_utilisation] end
    good = Enum.reject(with_room, &(MapSet.member?(siblings, &1) or busy?.(&1)))

    cond do
      good != [] ->
        {:ok, hd(good)}

      length(hosts) < opts[:max_wasm_hosts] or with_room == [] ->
        {:ok, prefix <> Integer.to_string(free_number(hosts, prefix))}

      true ->
        {:crowded,
         Enum.min_by(with_room, &{MapSet.member?(siblings, &1), utilisation.(&1) || 0.0})}
    end
  end

  defp number(host, prefix) do
    with true <- String.starts_with?(host, prefix),
         {n, ""} when n > 0 <-
           Integer.parse(
             binary_part(host, byte_size(prefix), byte_size(host) - byte_size(prefix))
           ) do
      n
    else
      _ -> nil
    end
  end

  defp free_number(hosts, prefix) do
    taken = MapSet.new(hosts, &number(&1, prefix))
    Enum.find(Stream.iterate(1, &(&1 + 1)), &(not MapSet.member?(taken, &1)))
  end

  @doc """
  Moves Wasm replica `id` out of the host it shares to a host of its own, started with
  the shared host's options and named like the replica (as an agent isolated after
  crashing its host is, see "Blame" in `Symbiont.Manifest`): its deliveries in flight
  finish where they are, then it starts there from its last acked state, with its queue
  (`Symbiont.Agent.Server.move/3`). Its co-tenants no longer wait behind it; the manifest
  keeps it there, and stops that host when the replica is retired.

  Returns `{:ok, %{"from" => shared_host, "to" => own_host}}`, or `{:error,
  %Symbiont.Error{}}`: `:not_found` for a replica that does not run here, `:refused` for
  one that is not a stable Wasm replica, is quarantined, or is alone in its host already
  (nothing to reroute away from), `:unavailable` or `:failed` when the move could not be
  done. The caller audits it (the
  conductor publishes its `reroute`).
  """
  @spec reroute(String.t(), timeout) :: {:ok, map} | {:error, Symbiont.Error.t()}
  def reroute(id, timeout \\ 30_000) when is_binary(id) do
    with {:ok, r} <- stable_replica(id),
         :ok <- wasm(r),
         :ok <- co_tenants(r),
         {:ok, own} <- own_host(r),
         :ok <- move(id, own, timeout) do
      {:ok, %{"from" => r.host, "to" => own}}
    end
  end

  defp stable_replica(id) do
    case Symbiont.Observation.replica(id) do
      nil ->
        not_done(:not_found, id, "no replica #{inspect(id)} runs on this node")

      %{role: role} when role != :stable ->
        not_done(:refused, id, "#{id} is a #{role}: the deploy's")

      %{quarantined: why} when why != nil ->
        not_done(:refused, id, "#{id} is quarantined (#{why})")

      r ->
        {:ok, r}
    end
  end

  defp wasm(%{version: "wasm:" <> _}), do: :ok

  defp wasm(r),
    do:
      not_done(
        :refused,
        r.id,
        "#{r.id} is not a Wasm agent (#{r.version}): it has a host of its own already"
      )

  defp co_tenants(r) do
    case Symbiont.Host.own_info(r.host) do
      {:ok, %{agents: [_, _ | _]}} ->
        :ok

      {:ok, %{agents: _}} ->
        not_done(:refused, r.id, "#{r.id} is alone in its host #{inspect(r.host)} already")

      {:error, why} ->
        message = "the host of #{r.id}, #{inspect(r.host)}, does not answer: #{inspect(why)}"
        not_done(:unavailable, r.id, message)
    end
  end

  defp own_host(r) do
    case Symbiont.Host.start_own(r.host, r.id) do
      {:ok, name} ->
        {:ok, name}

      {:error, why} ->
        not_done(
          :failed,
          r.id,
          "no host of its own could be started for #{r.id}: #{inspect(why)}"
        )
    end
  end

  defp move(id, own, timeout) do
    case Server.move(id, own, timeout) do
      :ok ->
        :ok

      {:error, why} ->
        Symbiont.Host.stop(own)
        {:error, moved_not(id, why)}
    end
  end

  defp moved_not(_id, %Symbiont.Error{} = error), do: error

  defp moved_not(id, why),
    do: Symbiont.Error.new(:failed, "#{id} could not move: #{inspect(why)}", id: id)

  defp not_done(reason, id, message), do: {:error, Symbiont.Error.new(reason, message, id: id)}
end
