"""App names the model (or a user) may say -> Android package, and back.

`Launch(app="微信")` names an app the way a person would; the phone needs its package. The first name of
each row is the one reported as the current app, and for the apps Open-AutoGLM knows it is the name
Open-AutoGLM reports, so the model sees the screen info it was trained on. English lookup ignores case,
spaces, hyphens and underscores ("google maps" = "Google-Maps" = "GoogleMaps").
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

from ..errors import AutoGLMError

# (package, name reported as current app, other names)
_ROWS: tuple[tuple[str, ...], ...] = (
    # messaging and social
    ("com.tencent.mm", "微信", "WeChat", "Weixin"),
    ("com.tencent.mobileqq", "QQ"),
    ("com.tencent.wework", "企业微信", "WeCom", "WeChat Work"),
    ("com.sina.weibo", "微博", "Weibo"),
    ("com.xingin.xhs", "小红书", "Xiaohongshu", "RedNote"),
    ("com.douban.frodo", "豆瓣", "Douban"),
    ("com.zhihu.android", "知乎", "Zhihu"),
    ("com.alibaba.android.rimet", "钉钉", "DingTalk"),
    ("com.ss.android.lark", "飞书", "Feishu", "Lark"),
    ("com.tencent.wemeet.app", "腾讯会议", "Tencent Meeting", "VooV Meeting"),
    ("com.whatsapp", "WhatsApp"),
    ("org.telegram.messenger", "Telegram"),
    ("com.facebook.katana", "Facebook"),
    ("com.facebook.orca", "Messenger"),
    ("com.instagram.android", "Instagram"),
    ("com.twitter.android", "Twitter", "X"),
    ("com.reddit.frontpage", "Reddit"),
    ("com.quora.android", "Quora"),
    ("com.linkedin.android", "LinkedIn"),
    ("com.discord", "Discord"),
    ("com.Slack", "Slack"),
    ("org.thoughtcrime.securesms", "Signal"),
    ("jp.naver.line.android", "LINE"),
    ("com.snapchat.android", "Snapchat"),
    ("com.pinterest", "Pinterest"),
    ("us.zoom.videomeetings", "Zoom"),
    # shopping, payment and services
    ("com.taobao.taobao", "淘宝", "Taobao", "淘宝闪购"),
    ("com.jingdong.app.mall", "京东", "JD", "JD.com", "京东秒送"),
    ("com.xunmeng.pinduoduo", "拼多多", "Pinduoduo"),
    ("com.taobao.idlefish", "闲鱼", "Xianyu"),
    ("com.achievo.vipshop", "唯品会", "Vipshop"),
    ("com.shizhuang.duapp", "得物", "Dewu", "Poizon"),
    ("com.eg.android.AlipayGphone", "支付宝", "Alipay"),
    ("com.sankuai.meituan", "美团", "Meituan"),
    ("com.sankuai.meituan.takeoutnew", "美团外卖", "Meituan Waimai"),
    ("com.dianping.v1", "大众点评", "Dianping"),
    ("me.ele", "饿了么", "Ele.me", "Eleme"),
    ("com.wudaokou.hippo", "盒马", "Hema", "Freshippo"),
    ("com.yek.android.kfc.activitys", "肯德基", "KFC"),
    ("com.mcdonalds.app", "McDonald", "McDonald's", "麦当劳"),
    ("com.cainiao.wireless", "菜鸟", "Cainiao"),
    ("com.einnovation.temu", "Temu"),
    ("com.amazon.mShop.android.shopping", "Amazon", "Amazon Shopping"),
    # maps, travel and transport
    ("com.autonavi.minimap", "高德地图", "Amap", "Gaode Map"),
    ("com.baidu.BaiduMap", "百度地图", "Baidu Maps"),
    ("com.tencent.map", "腾讯地图", "Tencent Maps"),
    ("ctrip.android.view", "携程", "Ctrip"),
    ("com.MobileTicket", "铁路12306", "12306"),
    ("com.Qunar", "去哪儿", "去哪儿旅行", "Qunar"),
    ("com.taobao.trip", "飞猪", "Fliggy"),
    ("com.sdu.didi.psnger", "滴滴出行", "滴滴", "DiDi"),
    ("com.jingyao.easybike", "哈啰", "Hello Bike"),
    ("com.umetrip.android.msky.app", "航旅纵横", "Umetrip"),
    ("com.ubercab", "Uber"),
    ("com.booking", "Booking.com", "Booking"),
    ("com.expedia.bookings", "Expedia"),
    ("com.airbnb.android", "Airbnb"),
    ("net.osmand", "Osmand"),
    # video, music, reading and news
    ("tv.danmaku.bili", "bilibili", "哔哩哔哩", "B站"),
    ("com.ss.android.ugc.aweme", "抖音", "Douyin"),
    ("com.smile.gifmaker", "快手", "Kuaishou"),
    ("com.ss.android.article.video", "西瓜视频", "Xigua Video"),
    ("com.tencent.qqlive", "腾讯视频", "Tencent Video"),
    ("com.qiyi.video", "爱奇艺", "iQIYI"),
    ("com.youku.phone", "优酷视频", "优酷", "Youku"),
    ("com.hunantv.imgo.activity", "芒果TV", "Mango TV"),
    ("com.phoenix.read", "红果短剧"),
    ("com.zhiliaoapp.musically", "Tiktok"),
    ("com.google.android.youtube", "YouTube"),
    ("com.netflix.mediaclient", "Netflix"),
    ("org.videolan.vlc", "VLC"),
    ("com.netease.cloudmusic", "网易云音乐", "NetEase Cloud Music"),
    ("com.tencent.qqmusic", "QQ音乐", "QQ Music"),
    ("com.kugou.android", "酷狗音乐", "KuGou"),
    ("com.luna.music", "汽水音乐", "Soda Music"),
    ("com.ximalaya.ting.android", "喜马拉雅", "Ximalaya"),
    ("com.spotify.music", "Spotify"),
    ("code.name.monkey.retromusic", "RetroMusic"),
    ("com.Project100Pi.themusicplayer", "PiMusicPlayer"),
    ("com.dragon.read", "番茄小说", "番茄免费小说", "Fanqie Novel"),
    ("com.kmxs.reader", "七猫免费小说", "七猫"),
    ("com.tencent.weread", "微信读书", "WeRead"),
    ("com.tencent.news", "腾讯新闻", "Tencent News"),
    ("com.ss.android.article.news", "今日头条", "Toutiao"),
    ("com.baidu.searchbox", "百度", "Baidu"),
    ("com.UCMobile", "UC浏览器", "UC Browser"),
    ("com.quark.browser", "夸克", "Quark"),
    # tools, productivity, finance, health, games
    ("com.larus.nova", "豆包", "Doubao"),
    ("com.baidu.netdisk", "百度网盘", "Baidu Netdisk"),
    ("cn.wps.moffice_eng", "WPS", "WPS Office"),
    ("com.tencent.androidqqmail", "QQ邮箱", "QQ Mail"),
    ("com.microsoft.office.outlook", "Outlook"),
    ("com.hexin.plat.android", "同花顺", "Tonghuashun"),
    ("com.lianjia.beike", "贝壳找房", "Beike"),
    ("com.anjuke.android.app", "安居客", "Anjuke"),
    ("com.gotokeep.keep", "keep"),
    ("com.lingan.seeyou", "美柚", "Meiyou"),
    ("com.duolingo", "Duolingo"),
    ("net.cozic.joplin", "Joplin"),
    ("com.rammigsoftware.bluecoins", "Bluecoins"),
    ("com.flauschcode.broccoli", "Broccoli"),
    ("com.simplemobiletools.smsmessenger", "SimpleSMSMessenger"),
    ("cn.damai", "大麦", "Damai"),
    ("com.sankuai.movie", "猫眼", "Maoyan"),
    ("com.miHoYo.hkrpg", "星穹铁道", "崩坏：星穹铁道", "Honkai: Star Rail"),
    ("com.papegames.lysk.cn", "恋与深空", "Love and Deepspace"),
    # system and Google apps
    ("com.android.settings", "AndroidSystemSettings", "Settings", "Android System Settings", "设置", "系统设置"),
    ("com.android.chrome", "Chrome", "Google Chrome"),
    ("com.android.vending", "GooglePlayStore", "Google Play Store", "Play Store", "Google Play"),
    ("com.android.deskclock", "Clock", "时钟"),
    ("com.android.contacts", "Contacts", "联系人"),
    ("com.android.soundrecorder", "AudioRecorder", "录音机"),
    ("com.android.fileexplorer", "Files", "File Manager", "文件管理"),
    ("com.google.android.gm", "gmail", "Google Mail"),
    ("com.google.android.apps.nbu.files", "GoogleFiles", "Files by Google"),
    ("com.google.android.calendar", "GoogleCalendar", "Google Calendar"),
    ("com.google.android.apps.dynamite", "GoogleChat", "Google Chat"),
    ("com.google.android.deskclock", "GoogleClock", "Google Clock"),
    ("com.google.android.contacts", "GoogleContacts", "Google Contacts"),
    ("com.google.android.apps.docs.editors.docs", "GoogleDocs", "Google Docs"),
    ("com.google.android.apps.docs.editors.slides", "GoogleSlides", "Google Slides"),
    ("com.google.android.apps.docs", "Google Drive"),
    ("com.google.android.apps.fitness", "GoogleFit", "Google Fit"),
    ("com.google.android.keep", "GoogleKeep", "Google Keep"),
    ("com.google.android.apps.maps", "GoogleMaps", "Google Maps"),
    ("com.google.android.apps.books", "Google Play Books"),
    ("com.google.android.apps.tasks", "GoogleTasks", "Google Tasks"),
    ("com.google.android.apps.photos", "Google Photos", "Photos"),
    ("com.google.android.apps.messaging", "Messages", "Google Messages"),
)

#: Home-screen packages: the current app is then "System Home", as Open-AutoGLM reports it.
LAUNCHERS = frozenset({
    "com.android.launcher", "com.android.launcher3", "com.google.android.apps.nexuslauncher",
    "com.miui.home", "com.huawei.android.launcher", "com.hihonor.android.launcher",
    "com.sec.android.app.launcher", "com.oppo.launcher", "com.bbk.launcher2", "net.oneplus.launcher",
})
HOME = "System Home"

_PACKAGE_NAME = re.compile(r"^[A-Za-z][\w]*(\.[A-Za-z][\w]*)+$")


class UnknownAppError(AutoGLMError, LookupError):
    """An app name that is not in the table (the message names the closest known ones)."""

    def __init__(self, name: str, suggestions: list[str]):
        self.name, self.suggestions = name, suggestions
        hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else \
            "; pass its package name instead (e.g. com.example.app)"
        super().__init__(f"unknown app {name!r}{hint}")


def _key(name: str) -> str:
    return re.sub(r"[\s\-_]+", "", name).casefold()


#: every name as written -> package
APP_PACKAGES: dict[str, str] = {name: row[0] for row in _ROWS for name in row[1:]}
_BY_KEY: dict[str, str] = {}
_DISPLAY: dict[str, str] = {}  # key -> the name as first written
for _name, _package in APP_PACKAGES.items():
    _BY_KEY.setdefault(_key(_name), _package)
    _DISPLAY.setdefault(_key(_name), _name)
_NAME_OF: dict[str, str] = {row[0]: row[1] for row in reversed(_ROWS)}  # first row wins for a package


def package_for(name: str, extra: Mapping[str, str] | None = None) -> str:
    """The package to launch for an app name ("微信", "wechat", "Google Maps"). `extra` adds or overrides
    names. A name that is not known but looks like a package (com.example.app) is returned as is.
    Raises UnknownAppError naming close matches."""
    key = _key(name)
    for table_name, package in (extra or {}).items():
        if _key(table_name) == key:
            return package
    if key in _BY_KEY:
        return _BY_KEY[key]
    if _PACKAGE_NAME.match(name.strip()):
        return name.strip()
    raise UnknownAppError(name, suggestions(name, extra))


def suggestions(name: str, extra: Mapping[str, str] | None = None, n: int = 5) -> list[str]:
    """Known names close to `name`: by spelling first, then names that contain it or that it contains."""
    display = dict(_DISPLAY)
    display.update({_key(k): k for k in (extra or {})})
    key = _key(name)
    if not key:
        return []
    # Short names (most Chinese ones) share fewer characters when misspelled: 抖因 / 抖音 is a 0.5 match.
    close = difflib.get_close_matches(key, list(display), n=n, cutoff=0.5 if len(key) <= 3 else 0.6)
    if len(key) > 1:  # one letter is in too many names to be a hint
        close += [k for k in display if k not in close and (key in k or k in key) and len(k) > 1]
    return [display[k] for k in close[:n]]


def app_name(package: str) -> str | None:
    """The name reported for a package ("com.tencent.mm" -> "微信"), or None if it is not in the table."""
    return _NAME_OF.get(package)


def describe_package(package: str) -> str:
    """What to report as the current app: its name, "System Home" for a launcher, else the package."""
    if not package or package in LAUNCHERS or package.endswith(".launcher"):
        return HOME
    return app_name(package) or package


def known_apps() -> list[str]:
    """Every known name, as written."""
    return list(APP_PACKAGES)
