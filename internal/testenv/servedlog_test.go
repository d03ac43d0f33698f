package testenv

import (
	"reflect"
	"testing"
)

func TestParseLogfmtReadsSlogTextLines(t *testing.T) {
	cases := []struct {
		line string
		want map[string]string
		err  bool
	}{
		{
			line: `time=2026-11-26T23:55:36.373Z level=DEBUG msg=served method=GET path=/v2/a/blobs/sha256:00 ns="" status=200 source=containerd bytes=308784 aborted=false`,
			want: map[string]string{"time": "2026-11-26T23:55:36.373Z", "level": "DEBUG", "msg": "served", "method": "GET",
				"path": "/v2/a/blobs/sha256:00", "ns": "", "status": "200", "source": "containerd", "bytes": "308784", "aborted": "false"},
		},
		{line: `msg="starting dregistry" version=(devel)`, want: map[string]string{"msg": "starting dregistry", "version": "(devel)"}},
		{line: `msg="a \"quoted\" word" k=v`, want: map[string]string{"msg": `a "quoted" word`, "k": "v"}},
		{line: `panic: runtime error`, err: true},
		{line: `msg="unterminated`, err: true},
	}
	for _, c := range cases {
		got, err := parseLogfmt(c.line)
		if c.err {
			if err == nil {
				t.Errorf("parseLogfmt(%q) = %v, want an error", c.line, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("parseLogfmt(%q) = %v, %v; want %v", c.line, got, err, c.want)
		}
	}
}
