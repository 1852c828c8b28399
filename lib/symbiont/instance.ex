defmodule Symbiont.Instance do
  @moduledoc """
  Symbiont inside your application: a set of agents, with the conductor that heals them
  (and, if asked, the status page), as one child of your own supervision tree.

      children = [
        {Symbiont,
         name: MyApp.Symbiont,
         agents: [[name: "billing", python: "billing:Billing"]],
         conductor: [tick_ms: 1_000],
         status_page: false}
      ]

      Supervisor.start_link(children, strategy: :one_for_one)

  `{Symbiont, opts}` is this module's `child_spec/1`. Several instances run side by side,
  each under its own `:name`: its manifest is `Module.concat(name, Manifest)` (see
  `manifest/1`), its conductor `Module.concat(name, Conductor)` (`conductor/1`), and each
  conductor watches and heals the agents of its own instance only (its Python policy runs
  in a host of its own, `"<name>-conductor"`; its shared Wasm hosts are `"<name>-wasm-N"`).

  What an instance owns, and what the node shares: the `:symbiont` application, started
  as a dependency of yours, runs the node's core (the hosts and agents supervisors, the
  mesh, the registries, the observation model, deploys and the audit trail); an instance
  adds a manifest, a conductor and a status page over it. Topics are the node's: agents
  of two instances talk to each other as any two agents do. Agent names are the node's
  too: an agent name is run by one instance at a time, and an instance whose agent is
  already another's does not start (a `:conflict` `Symbiont.Error` whose message names both). Outside a
  `config :symbiont, agents: [...]`, the application runs no agent of its own: the demo
  agents of `make run` are in Symbiont's own `config/config.exs`, which a dependency's
  config never reads.

  The helpers of `Symbiont` find the instance of an agent by its name: `Symbiont.scale/3`,
  `Symbiont.retire/1`, `Symbiont.deploy/3` act in the manifest that runs it;
  `Symbiont.spawn_agent/2` takes `in: MyApp.Symbiont`.

  ## Options

    * `:name` - an atom, required: the instance's name, unique on the node.
    * `:agents` - the agents, as `config :symbiont, agents: [...]` (see `Symbiont.Agent`);
      default `[]`. Checked before the instance serves, as the application's are.
    * `:conductor` - `false`, or the conductor's options (`Symbiont.Conductor`); default
      `[]`: a conductor with its defaults.
    * `:status_page` - `false` (default), or the page's options (`Symbiont.StatusPage`).
      The page shows the whole node, so a node has one: the instance that starts a second
      one does not start.
  """

  use Supervisor

  @registry Symbiont.Instances
  @allowed [:name, :agents, :conductor, :status_page]

  @doc false
  @spec registry() :: atom
  def registry, do: @registry

  @doc "The child spec of an instance: `{Symbiont, opts}` in a supervision tree."
  @spec child_spec(keyword) :: Supervisor.child_spec()
  def child_spec(opts) when is_list(opts) do
    %{
      id: Keyword.get(opts, :name, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      type: :supervisor
    }
  end

  @doc """
  Starts an instance (see the moduledoc for `opts`). Returns
  `{:error, %Symbiont.Error{}}`: `:invalid` for bad options, `:cannot_start` for an agent
  that cannot start, `:conflict` for an agent another instance runs, an instance or a
  status page that runs already, `:failed` for another child that does not start.

      iex> {:error, error} = Symbiont.Instance.start_link(agents: [])
      iex> {error.reason, error.message}
      {:invalid, "expected :name of a Symbiont instance to be an atom such as MyApp.Symbiont, got: nil"}
      iex> {:error, error} = Symbiont.Instance.start_link(name: Doc.Symbiont, agent: [])
      iex> {error.reason, error.message}
      {:invalid, "unknown option :agent of a Symbiont instance, allowed: [:name, :agents, :conductor, :status_page]"}
  """
  @spec start_link(keyword) :: Supervisor.on_start() | {:error, Symbiont.Error.t()}
  def start_link(opts) when is_list(opts) do
    with {:ok, config} <- opts |> validate() |> Symbiont.Error.wrap(:invalid) do
      case Supervisor.start_link(__MODULE__, config, name: config.name) do
        {:error, {:shutdown, {:failed_to_start_child, child, reason}}} ->
          {why, message} = failed(config.name, child, reason)
          {:error, Symbiont.Error.new(why, message, instance: config.name)}

        {:error, {:already_started, _pid}} ->
          {:error,
           Symbiont.Error.new(
             :conflict,
             "a Symbiont instance named #{inspect(config.name)} runs already",
             instance: config.name
           )}

        other ->
          other
      end
    end
  end

  defp failed(_name, _child, {:agent_cannot_start, message}), do: {:cannot_start, message}
  defp failed(_name, _child, {:agent_claimed, message}), do: {:conflict, message}

  defp failed(name, Symbiont.StatusPage, {:already_started, _}),
    do:
      {:conflict,
       "the status page of #{inspect(name)} cannot start: the node's status page runs already " <>
         "(it shows every agent of the node; give status_page: false)"}

  defp failed(name, child, reason),
    do: {:failed, "#{inspect(child)} of #{inspect(name)} cannot start: #{inspect(reason)}"}

  @impl true
  def init(config) do
    {:ok, _} = Registry.register(@registry, {:instance, config.name}, nil)
    name = config.name
    slug = slug(name)

    manifest =
      {Symbiont.Manifest,
       name: manifest(name),
       agents: config.agents,
       check: true,
       instance: name,
       wasm_hosts: slug <> "-wasm"}
      |> Supervisor.child_spec(shutdown: 30_000)

    conductor =
      case config.conductor do
        false ->
          []

        opts ->
          defaults = [
            name: conductor(name),
            manifest: manifest(name),
            scope: fn agent -> owner(agent) == name end,
            policy_host: slug <> "-conductor"
          ]

          [{Symbiont.Conductor, Keyword.merge(defaults, opts)}]
      end

    page = if config.status_page, do: [{Symbiont.StatusPage, config.status_page}], else: []

    Supervisor.init([manifest] ++ conductor ++ page, strategy: :rest_for_one)
  end

  defp validate(opts) do
    with :ok <- known(opts),
         {:ok, name} <- name(Keyword.get(opts, :name)),
         {:ok, agents} <- Symbiont.Manifest.validate(Keyword.get(opts, :agents, [])),
         {:ok, conductor} <- conductor_opts(Keyword.get(opts, :conductor, [])),
         {:ok, page} <- page_opts(Keyword.get(opts, :status_page, false)) do
      {:ok, %{name: name, agents: agents, conductor: conductor, status_page: page}}
    end
  end

  defp known(opts) do
    case Enum.find(opts, fn {k, _} -> k not in @allowed end) do
      nil ->
        :ok

      {k, _} ->
        {:error,
         "unknown option #{inspect(k)} of a Symbiont instance, allowed: #{inspect(@allowed)}"}
    end
  end

  defp name(name) when is_atom(name) and name not in [nil, true, false], do: {:ok, name}

  defp name(other),
    do:
      {:error,
       "expected :name of a Symbiont instance to be an atom such as MyApp.Symbiont, got: #{inspect(other)}"}

  defp conductor_opts(false), do: {:ok, false}

  defp conductor_opts(opts) when is_list(opts) do
    if Keyword.keyword?(opts) and not Keyword.has_key?(opts, :enabled),
      do: {:ok, opts},
      else: bad_conductor(opts)
  end

  defp conductor_opts(other), do: bad_conductor(other)

  defp bad_conductor(other),
    do:
      {:error,
       "expected :conductor of a Symbiont instance to be false or the conductor's options (a keyword list), got: #{inspect(other)}"}

  defp page_opts(false), do: {:ok, false}

  defp page_opts(opts) when is_list(opts) do
    case Symbiont.StatusPage.validate_options(opts) do
      {:ok, _} -> {:ok, opts}
      {:error, error} -> {:error, error}
    end
  end

  defp page_opts(other),
    do:
      {:error,
       "expected :status_page of a Symbiont instance to be false or the page's options (a keyword list), got: #{inspect(other)}"}

  # "MyApp.Symbiont" => "my_app.symbiont": a host-name prefix of its own.
  defp slug(name), do: name |> inspect() |> Macro.underscore() |> String.replace("/", ".")

  @doc "The name of the manifest of instance `name`."
  @spec manifest(atom) :: atom
  def manifest(name), do: Module.concat(name, Manifest)

  @doc "The name of the conductor of instance `name`."
  @spec conductor(atom) :: atom
  def conductor(name), do: Module.concat(name, Conductor)

  @doc "The names of the instances running on this node, sorted."
  @spec list() :: [atom]
  def list do
    # A stopped instance's entry may linger a moment: only the living count.
    entries =
      Registry.select(@registry, [{{{:instance, :"$1"}, :"$2", :_}, [], [{{:"$1", :"$2"}}]}])

    for({name, pid} <- entries, Process.alive?(pid), do: name) |> Enum.sort()
  end

  @doc """
  The instance that runs agent `name`, or `nil` when the node's own manifest runs it (or
  none does).
  """
  @spec owner(String.t()) :: atom | nil
  def owner(name) do
    case claimed(name) do
      {_manifest, Symbiont} -> nil
      {_manifest, instance} -> instance
      nil -> nil
    end
  end

  # The manifest that claimed `name` and its instance; a claim of a manifest that is
  # gone (its entry lingers a moment) is none.
  defp claimed(name) do
    case Registry.lookup(@registry, {:agent, name}) do
      [{manifest, instance}] -> if Process.alive?(manifest), do: {manifest, instance}
      [] -> nil
    end
  end

  @doc "Whether agent `name` is the node's own: no instance runs it (the node's conductor's scope)."
  @spec unowned?(String.t()) :: boolean
  def unowned?(name), do: owner(name) == nil

  @doc """
  The manifest that runs agent `name`: its instance's, or the node's own
  (`Symbiont.Manifest`) when no instance runs it.
  """
  @spec manifest_of(String.t()) :: GenServer.server()
  def manifest_of(name) do
    case claimed(name) do
      {manifest, _} -> manifest
      nil -> Symbiont.Manifest
    end
  end

  @doc false
  # Called by a manifest that has an `:instance`, in its own process: its agent names
  # become its own on the node, or none does: a `:conflict` whose message names who runs
  # the first taken one.
  @spec claim(atom | nil, [String.t()]) :: :ok | {:error, Symbiont.Error.t()}
  def claim(nil, _names), do: :ok

  def claim(instance, names) do
    Enum.reduce_while(names, [], fn name, done ->
      case Registry.register(@registry, {:agent, name}, instance) do
        {:ok, _} ->
          {:cont, [name | done]}

        {:error, {:already_registered, pid}} ->
          if pid == self() do
            {:cont, done}
          else
            unclaim(instance, done)
            {:halt, {:error, Symbiont.Error.new(:conflict, taken(instance, name), agent: name)}}
          end
      end
    end)
    |> case do
      {:error, _} = error -> error
      _ -> :ok
    end
  end

  defp taken(instance, name) do
    by =
      case owner(name) do
        nil -> "the node's own manifest (config :symbiont, agents: [...])"
        other -> "instance #{inspect(other)}"
      end

    "agent #{inspect(name)} of #{who(instance)} is run by #{by} already; an agent name is run by one instance at a time"
  end

  defp who(Symbiont), do: "the node's own manifest"
  defp who(instance), do: "instance #{inspect(instance)}"

  @doc false
  @spec unclaim(atom | nil, [String.t()]) :: :ok
  def unclaim(nil, _names), do: :ok

  def unclaim(_instance, names) do
    Enum.each(names, &Registry.unregister(@registry, {:agent, &1}))
  end
end
