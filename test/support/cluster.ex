defmodule Symbiont.Cluster do
  @moduledoc false
  # Multi-node tests: makes the test node distributed and starts :peer nodes on this
  # machine that run Symbiont with the test node's configuration.

  @doc "Starts distribution on the test node (short names) unless it is already on."
  def ensure_distributed! do
    unless Node.alive?() do
      {_, 0} = System.cmd("epmd", ["-daemon"])
      name = :"symbiont_test_#{System.pid()}"
      {:ok, _} = Node.start(name, :shortnames)
      # As hard to guess as make run's: peers share it, while the tests run.
      Node.set_cookie(:"c#{Base.url_encode64(:crypto.strong_rand_bytes(32), padding: false)}")
    end

    :ok
  end

  @doc """
  A fresh name for a peer node (what `start_peer!/2` would pick): to know a cluster's
  node names before its nodes start, or to start a node again under its old name.
  """
  def peer_name(prefix),
    # The OS pid too: test runs in other checkouts start peers on this machine at the same time.
    do: :"#{prefix}_#{System.pid()}_#{System.unique_integer([:positive])}"

  @doc "The full node name (`name@host`) a peer started as `name` gets."
  def node_name(name) do
    [_, host] = node() |> Atom.to_string() |> String.split("@")
    :"#{name}@#{host}"
  end

  @doc """
  Starts a peer node running Symbiont and returns `{peer, node}`. It is stopped when the
  test ends. Options: `:name` (default: `peer_name(prefix)`), `:env` (the `:symbiont`
  application env to start with, over this node's; `:agents` defaults to none), `:start`
  (`false`: leave Symbiont for the test to start; default `true`).
  """
  def start_peer!(prefix, opts \\ []) do
    ensure_distributed!()
    name = Keyword.get_lazy(opts, :name, fn -> peer_name(prefix) end)
    env = Keyword.get(opts, :env, [])
    # Peers come and go while the others stay connected; OTP 25's global would otherwise
    # disconnect survivors "to prevent overlapping partitions".
    args = [
      ~c"-kernel",
      ~c"prevent_overlapping_partitions",
      ~c"false"
    ]

    args = args ++ Enum.flat_map(:code.get_path(), &[~c"-pa", &1])
    {:ok, peer, node} = :peer.start(%{name: name, args: args, env: cookie_env()})
    ExUnit.Callbacks.on_exit(fn -> stop_peer(peer) end)

    env =
      Application.get_all_env(:symbiont)
      |> Keyword.put(:agents, [])
      |> Keyword.merge(env)

    for {key, value} <- env,
        do: :ok = :erpc.call(node, Application, :put_env, [:symbiont, key, value])

    :ok = :erpc.call(node, Application, :put_env, [:logger, :level, :warning])
    # Modules this node's tests quieted are quiet there too.
    for {module, level} <- :logger.get_module_level(),
        do: :ok = :erpc.call(node, :logger, :set_module_level, [module, level])

    if Keyword.get(opts, :start, true),
      do: {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:symbiont])

    {peer, node}
  end

  @doc """
  The OS environment (for `:peer.start/1`'s `env:`) that gives a node this node's cookie
  with no `-setcookie` on its command line, which every local user could read: `HOME` is a
  private directory holding `.erlang.cookie`, as `make run` does (docs/SECURITY.md §3).
  Symbiont puts the user's `HOME` back as it starts (`SYMBIONT_USER_HOME`). The directory
  is made once a run; `remove_cookie_home/0` removes it.
  """
  def cookie_env do
    ensure_distributed!()

    dir =
      case :persistent_term.get({__MODULE__, :cookie_home}, nil) do
        nil ->
          # A fresh name, created by us (mkdir fails on one that exists) and closed to
          # others before the cookie is written into it.
          dir = Path.join(System.tmp_dir!(), "symbiont-cookie-#{System.pid()}-#{random()}")
          :ok = File.mkdir(dir)
          :ok = File.chmod(dir, 0o700)
          file = Path.join(dir, ".erlang.cookie")
          :ok = File.write(file, Atom.to_string(Node.get_cookie()))
          :ok = File.chmod(file, 0o400)
          :persistent_term.put({__MODULE__, :cookie_home}, dir)
          dir

        dir ->
          dir
      end

    [{~c"HOME", to_charlist(dir)}, {~c"SYMBIONT_USER_HOME", to_charlist(System.user_home!())}]
  end

  @doc "Removes the directory `cookie_env/0` made, if any."
  def remove_cookie_home do
    case :persistent_term.get({__MODULE__, :cookie_home}, nil) do
      nil -> :ok
      dir -> File.rm_rf!(dir)
    end

    :ok
  end

  defp random, do: Base.url_encode64(:crypto.strong_rand_bytes(9))

  @doc "Stops a peer; one already stopped is fine."
  def stop_peer(peer) do
    :peer.stop(peer)
  catch
    :exit, _ -> :ok
  end

  @doc """
  Starts, on `node`, a process subscribed to `topic` (options as in
  `Symbiont.Mesh.subscribe/3`, and `load: max`: a load counter made on that node, as an
  agent's, for a queue of `max` events that rejects when full) that forwards each
  message to `to` as `{:got, tag, node, message}`. Returns its pid once subscribed.
  """
  def forwarder(node, topic, opts, to, tag) do
    :erpc.call(node, __MODULE__, :start_forwarder, [topic, opts, to, tag])
  end

  @doc false
  def start_forwarder(topic, opts, to, tag) do
    parent = self()

    opts =
      case Keyword.pop(opts, :load) do
        {nil, opts} ->
          opts

        {max, opts} ->
          load = {:atomics.new(3, signed: true), max, 1_000_000, :reject}
          Keyword.put(opts, :metadata, %{load: load})
      end

    pid =
      spawn(fn ->
        :ok = Symbiont.Mesh.subscribe(Symbiont.Mesh, topic, opts)
        send(parent, {:subscribed, self()})
        forward(to, tag)
      end)

    receive do
      {:subscribed, ^pid} -> pid
    after
      5_000 -> raise "forwarder did not subscribe"
    end
  end

  defp forward(to, tag) do
    receive do
      msg ->
        send(to, {:got, tag, node(), msg})
        forward(to, tag)
    end
  end
end
