package testenv

import (
	"fmt"
	"os"
)

// LoopbackIP returns the loopback address 127.A.B.host, where A.B derive from
// the process id: go test runs the test binaries of several packages at once,
// and each must own its addresses (fixed ports such as :5000 stay usable).
// Linux routes all of 127.0.0.0/8 to lo without setup. host is 1..254.
func LoopbackIP(host int) string {
	if host < 1 || host > 254 {
		panic(fmt.Sprintf("testenv: LoopbackIP host %d outside 1..254", host))
	}
	pid := os.Getpid()
	return fmt.Sprintf("127.%d.%d.%d", 1+(pid>>8)%254, pid&0xff, host)
}
