defmodule Symbiont.StatusPage.Server do
  @moduledoc false
  # Owns the httpd instance of the status page and knows its address. The instance runs
  # under the :inets application's supervisor (a stand-alone one would be linked to us,
  # but httpd:info/2, which tells the port picked for port 0, knows only inets' own); so
  # this process stops it when it terminates, and one left behind by a process that was
  # killed is stopped before a new one starts.

  use GenServer
  require Logger

  @server_name ~c"symbiont-status-page"

  @spec start_link(map) :: GenServer.on_start()
  def start_link(config), do: GenServer.start_link(__MODULE__, config, name: __MODULE__)

  @doc false
  # The names a request's Host header may give (StatusPage's `:hosts`), read by the
  # handler on every request, in httpd's process.
  @spec allowed_host?(String.t()) :: boolean
  def allowed_host?(name), do: name in :persistent_term.get({__MODULE__, :hosts}, [])

  @spec url() :: String.t() | nil
  def url do
    GenServer.call(__MODULE__, :url)
  catch
    :exit, _ -> nil
  end

  @impl true
  def init(config) do
    Process.flag(:trap_exit, true)
    # httpd wants a server root and a document root; it serves no file from them (only
    # the handler module runs).
    root = config.root |> Path.expand() |> String.to_charlist()

    httpd = [
      port: config.port,
      bind_address: config.ip,
      ipfamily: :inet,
      server_name: @server_name,
      server_root: root,
      document_root: root,
      modules: [Symbiont.StatusPage.Handler],
      # An idle keep-alive connection (the page's polls) is closed after this long.
      keep_alive_timeout: 30
    ]

    for {:httpd, pid, info} <- :inets.services_info(),
        info[:server_name] == @server_name,
        do: :inets.stop(:httpd, pid)

    hosts = ["127.0.0.1", "localhost", to_string(:inet.ntoa(config.ip)) | config.hosts]
    :persistent_term.put({__MODULE__, :hosts}, Enum.uniq(hosts))

    case :inets.start(:httpd, httpd) do
      {:ok, pid} ->
        Process.monitor(pid)
        [port: port] = :httpd.info(pid, [:port])
        url = "http://#{:inet.ntoa(config.ip)}:#{port}/"
        Logger.info("status page: #{url}")
        {:ok, %{httpd: pid, url: url}}

      {:error, reason} ->
        # A node runs without its page rather than not at all (another node on this
        # machine may hold the port).
        Logger.error(
          "the status page could not listen on #{:inet.ntoa(config.ip)}:#{config.port}: " <>
            "#{why(reason)}; set config :symbiont, status_page: [port: ...] (0 = any free port)"
        )

        :ignore
    end
  end

  # httpd nests the socket's error deep in supervisor start errors.
  defp why(reason) do
    case listen_error(reason) do
      :eaddrinuse -> "the port is in use"
      nil -> inspect(reason)
      posix -> "#{:inet.format_error(posix)} (#{posix})"
    end
  end

  defp listen_error({:listen, posix}) when is_atom(posix), do: posix

  defp listen_error(term) when is_tuple(term),
    do: term |> Tuple.to_list() |> listen_error()

  defp listen_error(list) when is_list(list), do: Enum.find_value(list, &listen_error/1)
  defp listen_error(_), do: nil

  @impl true
  def handle_call(:url, _from, state), do: {:reply, state.url, state}

  @impl true
  def handle_info({:DOWN, _, :process, pid, reason}, %{httpd: pid} = state),
    do: {:stop, {:httpd_down, reason}, state}

  @impl true
  def terminate(_reason, %{httpd: pid}) do
    :inets.stop(:httpd, pid)
    :ok
  end
end
