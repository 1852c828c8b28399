defmodule Symbiont.Host.Standby do
  @moduledoc false
  # Warm standby host processes: a host that (re)starts takes one that is already running
  # instead of starting Python cold, so a crashed host serves again in milliseconds rather
  # than the ~55 ms a cold start takes (bench/heal.exs measures both).
  #
  # A standby is `python -m symbiont.host` started exactly as a host would start it (same
  # executable, working directory and environment: the launch key), that has imported
  # symbiont and waits for its `init` frame (PROTOCOL.md §3). Nothing is sent to it, so the
  # host that takes it sends its own `init` (its name, limits, python_path) and gets
  # `ready` at once. The port is handed over with `Port.connect/2`.
  #
  # The pool learns launch keys from demand: a take that finds no standby for its key
  # makes the pool keep `size` standbys for that key from then on (the 4 most recent
  # keys). Each take also names the Python modules of the taker's agents: the standbys of
  # that key import them before their handshake (SYMBIONT_PRELOAD), since a user module's
  # imports can cost more than the rest of a restart. A standby that exits while it waits is replaced, unless it lived less than
  # a second (a launch that fails would otherwise loop); the next take tries again.
  #
  # `config :symbiont, standby_hosts: n` sets `size` (default 1; 0 turns the pool off).
  # A crash of the pool loses its standbys only; hosts start cold meanwhile.

  use GenServer

  require Logger

  @max_keys 4
  @max_preload 32
  @min_life_ms 1_000

  @doc false
  def child_spec(opts),
    do: %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}, shutdown: 5_000}

  @doc false
  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc false
  # A standby for `key` ({executable, cd, env}), now owned (and linked) by the caller;
  # `:none` when there is none (or no pool), and the pool starts one for next time. The
  # standbys of `key` import `modules` (the caller's agents' Python modules) ahead.
  @spec take({String.t(), String.t(), list}, [String.t()]) :: {:ok, port} | :none
  def take(key, modules \\ []) do
    GenServer.call(__MODULE__, {:take, key, modules, self()}, 2_000)
  catch
    :exit, _ -> :none
  end

  @doc false
  # The standbys of `key` are to import `modules` ahead: those that do not are replaced.
  @spec learn({String.t(), String.t(), list}, [String.t()]) :: :ok
  def learn(key, modules), do: GenServer.cast(__MODULE__, {:learn, key, modules})

  @doc false
  # Opens a host process for `key`, owned by the caller; one that imports `preload` before
  # its handshake (SYMBIONT_PRELOAD, see symbiont._host.run).
  @spec open({String.t(), String.t(), list}, [String.t()]) :: port
  def open({python, cd, env}, preload \\ []) do
    env =
      if preload == [],
        do: env,
        else: [{~c"SYMBIONT_PRELOAD", String.to_charlist(Enum.join(preload, ","))} | env]

    Port.open({:spawn_executable, python}, [
      :binary,
      :stream,
      :nouse_stdio,
      :exit_status,
      args: ["-m", "symbiont.host"],
      env: env,
      cd: cd
    ])
  end

  @impl true
  def init(_opts) do
    Process.flag(:trap_exit, true)
    # key => [{port, opened_at_ms}]; keys, most recently taken first; key => the modules
    # its standbys import ahead.
    {:ok, %{ready: %{}, keys: [], preload: %{}}}
  end

  @impl true
  def handle_call({:take, key, modules, pid}, _from, state) do
    state = %{learn_modules(state, key, modules) | keys: touch(state.keys, key)}

    {reply, state} =
      case Map.get(state.ready, key, []) do
        [{port, _at} | rest] ->
          Port.connect(port, pid)
          Process.unlink(port)
          {{:ok, port}, put_in(state.ready[key], rest)}

        [] ->
          {:none, state}
      end

    send(self(), :refill)
    {:reply, reply, state}
  end

  @impl true
  def handle_cast({:learn, key, modules}, state) do
    known = Map.get(state.preload, key, [])

    if key in state.keys and modules -- known != [] do
      {stale, ready} = Map.pop(state.ready, key, [])
      for {port, _} <- stale, do: close(port)
      {:noreply, refill(learn_modules(%{state | ready: ready}, key, modules))}
    else
      {:noreply, state}
    end
  end

  @impl true
  def handle_info(:refill, state), do: {:noreply, refill(state)}

  def handle_info({port, {:exit_status, status}}, state) when is_port(port) do
    {key, life} = forget(state, port)
    state = drop(state, port)

    if key && life < @min_life_ms do
      Logger.warning(
        "standby host exited with status #{status} after #{life} ms; no new standby until the next host start"
      )

      {:noreply, %{state | keys: List.delete(state.keys, key)}}
    else
      {:noreply, refill(state)}
    end
  end

  # A standby prints nothing before init, but a warning at import time is not an error.
  def handle_info({port, {:data, _}}, state) when is_port(port), do: {:noreply, state}
  def handle_info({:EXIT, _port, _reason}, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    for {_key, standbys} <- state.ready, {port, _} <- standbys, do: close(port)
    :ok
  end

  defp size, do: Symbiont.Config.get(:standby_hosts)

  # The modules the standbys of `key` import ahead, `modules` added (at most @max_preload).
  defp learn_modules(state, key, modules) do
    preload = Enum.take(Enum.uniq(Map.get(state.preload, key, []) ++ modules), @max_preload)
    %{state | preload: Map.put(state.preload, key, preload)}
  end

  defp touch(keys, key), do: Enum.take([key | List.delete(keys, key)], @max_keys)

  # Tops up each wanted key to `size` standbys and closes those of keys no longer wanted.
  defp refill(state) do
    n = size()
    now = System.monotonic_time(:millisecond)

    {keep, gone} = Map.split(state.ready, state.keys)
    preload = Map.take(state.preload, state.keys)
    for {_key, standbys} <- gone, {port, _} <- standbys, do: close(port)

    ready =
      Map.new(state.keys, fn key ->
        have = Map.get(keep, key, [])

        {extra, have} =
          if length(have) > n, do: Enum.split(have, length(have) - n), else: {[], have}

        for {port, _} <- extra, do: close(port)
        modules = Map.get(preload, key, [])
        new = for _ <- 1..(n - length(have))//1, port = safe_open(key, modules), do: {port, now}
        {key, have ++ new}
      end)

    %{state | ready: ready, preload: preload}
  end

  defp safe_open(key, modules) do
    open(key, modules)
  rescue
    e in ErlangError ->
      Logger.warning("cannot start a standby host: #{inspect(e.original)}")
      nil
  end

  defp close(port) do
    os_pid = with {:os_pid, p} <- Port.info(port, :os_pid), do: p
    Symbiont.Host.Reaper.close(port, os_pid, 1_000)
  end

  defp forget(state, port) do
    Enum.find_value(state.ready, {nil, 0}, fn {key, standbys} ->
      case List.keyfind(standbys, port, 0) do
        {^port, at} -> {key, System.monotonic_time(:millisecond) - at}
        nil -> nil
      end
    end)
  end

  defp drop(state, port),
    do: %{state | ready: Map.new(state.ready, fn {k, v} -> {k, List.keydelete(v, port, 0)} end)}
end
