package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Connection placement through sluiced's admin API: the kernel spreads
// accepted connections over the workers, and /api/v1/connections tells which
// worker took which peer port, so a scenario redials until it has the
// connection it wants (as test_amqp.py's connect_on does for pika).

var (
	adminURL    = os.Getenv("SLUICE_ADMIN")
	dials       int
	scenarioArg string
)

func workerCount() int {
	n, err := strconv.Atoi(os.Getenv("SLUICE_WORKERS"))
	if err != nil || n < 1 || adminURL == "" {
		return 1
	}
	return n
}

type adminConnections struct {
	Connections []struct {
		Protocol string `json:"protocol"`
		Peer     string `json:"peer"`
		Worker   int    `json:"worker"`
	} `json:"connections"`
}

// workerOf asks the admin API which worker serves c, polling (bounded) in
// case the listing has not caught up with a connection that just opened.
func workerOf(c *amqp.Connection) int {
	suffix := ":" + strconv.Itoa(c.LocalAddr().(*net.TCPAddr).Port)
	client := http.Client{Timeout: waitMax}
	deadline := time.Now().Add(waitMax)
	for time.Now().Before(deadline) {
		resp, err := client.Get(adminURL + "/api/v1/connections")
		must(err)
		var list adminConnections
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		must(err)
		for _, x := range list.Connections {
			if x.Protocol == "amqp" && strings.HasSuffix(x.Peer, suffix) {
				return x.Worker
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	check(false, "connection from port %s never listed by the admin API", suffix)
	return -1
}

// dialOn returns a connection served by worker w (any connection when
// placement is off); the connections that landed elsewhere are closed.
func dialOn(w int) *amqp.Connection {
	if workerCount() == 1 {
		return dialAny()
	}
	var spare []*amqp.Connection
	defer func() {
		for _, x := range spare {
			x.Close()
		}
	}()
	for i := 0; i < 64; i++ {
		c := dialAny()
		if workerOf(c) == w%workerCount() {
			return c
		}
		spare = append(spare, c)
	}
	check(false, "no connection landed on worker %d in 64 tries", w)
	return nil
}
